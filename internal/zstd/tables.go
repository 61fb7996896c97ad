package zstd

// Sequence code tables of RFC 8878 section 3.1.1.3.2.1.1.
var llBase = [36]uint32{
	0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
	16, 18, 20, 22, 24, 28, 32, 40, 48, 64, 128, 256, 512, 1024, 2048, 4096,
	8192, 16384, 32768, 65536,
}

var llBits = [36]uint8{
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	1, 1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12,
	13, 14, 15, 16,
}

var mlBase = [53]uint32{
	3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
	19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
	35, 37, 39, 41, 43, 47, 51, 59, 67, 83, 99, 131, 259, 515, 1027, 2051,
	4099, 8195, 16387, 32771, 65539,
}

var mlBits = [53]uint8{
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11,
	12, 13, 14, 15, 16,
}

// Predefined distributions (RFC 8878 section 3.1.1.3.2.2).
var llPredef = []int16{4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1, -1, -1, -1, -1}
var mlPredef = []int16{1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1}
var ofPredef = []int16{1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1}

const (
	llPredefLog = 6
	mlPredefLog = 6
	ofPredefLog = 5
	llMaxLog    = 9
	mlMaxLog    = 9
	ofMaxLog    = 8
	maxLLCode   = 35
	maxMLCode   = 52
	maxOFCode   = 31
)

var llCodeTab [64]uint8
var mlCodeTab [128]uint8

func init() {
	for c := len(llBase) - 1; c >= 0; c-- {
		for v := llBase[c]; v < 64 && v < llBase[c]+1<<llBits[c]; v++ {
			llCodeTab[v] = uint8(c)
		}
	}
	for c := len(mlBase) - 1; c >= 0; c-- {
		for v := mlBase[c] - 3; v < 128 && v < mlBase[c]-3+1<<mlBits[c]; v++ {
			mlCodeTab[v] = uint8(c)
		}
	}
}

func llCode(ll uint32) uint32 {
	if ll < 64 {
		return uint32(llCodeTab[ll])
	}
	return highBit(ll) + 19
}

// mlCode takes the match length itself (at least 3).
func mlCode(ml uint32) uint32 {
	b := ml - 3
	if b < 128 {
		return uint32(mlCodeTab[b])
	}
	return highBit(b) + 36
}
