package zstd

import (
	"bytes"
	"testing"
)

var fuzzEnc = []*Encoder{NewEncoder(1), NewEncoder(15), NewEncoder(19)}

func FuzzEncode(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte("abcabcabcabcabcabcabcabc"))
	f.Add(bytes.Repeat([]byte{7}, 5000))
	f.Add([]byte("the quick brown fox jumps over the lazy dog; the quick brown fox"))
	f.Add(metadataBytes(testRand(), 4096))
	f.Add(offsetBytes(testRand(), 20000))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, e := range fuzzEnc {
			frame := e.Encode(nil, data)
			got, err := kDecode(frame)
			if err != nil {
				t.Fatalf("level %d: %v", e.level, err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("level %d: round trip differs", e.level)
			}
		}
	})
}
