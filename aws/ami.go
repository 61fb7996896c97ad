// Package aws turns a raw disk image into an Amazon Machine Image without an intermediate S3 upload or
// VM import job: the EBS direct APIs write the disk straight into a snapshot (only its non-zero 512 KiB
// blocks, in parallel), and EC2 RegisterImage makes a UEFI, ENA-enabled AMI of it with a gp3 root volume.
//
// Credentials, like the AWS CLI's, come from the SDK's default chain: environment variables, the shared
// config and credentials files (AWS_PROFILE), SSO, web identity, or the instance role.
package aws

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	sdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"osbuild.dev/osbuild/formats"
)

// BlockSize is the EBS direct API block: every PutSnapshotBlock carries exactly this many bytes.
const BlockSize = 512 << 10

// Options describe the AMI to create.
type Options struct {
	Region      string // required, e.g. eu-west-1
	Name        string // AMI name, required: 3-128 characters, unique in the account and region
	Description string
	Arch        string // x86_64 (default) or arm64; amd64 and aarch64 are accepted too
	EndpointURL string // a custom endpoint for both EBS and EC2 (tests, VPC endpoints, LocalStack)
	Workers     int    // parallel PutSnapshotBlock calls; 0 means 16
	// PollInterval is the first wait between DescribeSnapshots calls while the snapshot completes; 0 means
	// 5 s. WaitTimeout bounds that wait; 0 means 30 minutes.
	PollInterval time.Duration
	WaitTimeout  time.Duration
	// Log receives one line per step (nil: quiet).
	Log io.Writer
}

// Result names what was created.
type Result struct {
	SnapshotID    string
	ImageID       string
	VolumeSizeGiB int64
	BlocksWritten int
}

// PushAMI uploads the raw disk image at path as an EBS snapshot and registers an AMI from it.
func PushAMI(ctx context.Context, path string, opts Options) (*Result, error) {
	arch, err := ec2Arch(opts.Arch)
	if err != nil {
		return nil, err
	}
	if opts.Region == "" {
		return nil, errors.New("no region: pass --region (e.g. eu-west-1)")
	}
	if n := len(opts.Name); n < 3 || n > 128 {
		return nil, fmt.Errorf("AMI name %q: EC2 wants 3 to 128 characters; pass --name", opts.Name)
	}
	if opts.Workers <= 0 {
		opts.Workers = 16
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 5 * time.Second
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = 30 * time.Minute
	}
	logf := func(format string, a ...any) {
		if opts.Log != nil {
			fmt.Fprintf(opts.Log, format+"\n", a...)
		}
	}

	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if kind, err := formats.Detect(f); err != nil || kind != formats.Raw {
		if err == nil {
			err = fmt.Errorf("it is a %s image", kind)
		}
		return nil, fmt.Errorf("%s: push aws takes a raw disk image (osbuild build's .raw output): %w", path, err)
	}
	size := fi.Size()
	gib := (size + 1<<30 - 1) >> 30

	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(opts.Region))
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	ebsc := ebs.NewFromConfig(cfg, func(o *ebs.Options) {
		if opts.EndpointURL != "" {
			o.BaseEndpoint = sdk.String(opts.EndpointURL)
		}
	})
	ec2c := ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		if opts.EndpointURL != "" {
			o.BaseEndpoint = sdk.String(opts.EndpointURL)
		}
	})

	// The client token makes a retried StartSnapshot (same image, same name) return the same snapshot
	// instead of starting a second one.
	tok := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%d", opts.Name, size, fi.ModTime().UnixNano()))
	start, err := ebsc.StartSnapshot(ctx, &ebs.StartSnapshotInput{
		VolumeSize:  sdk.Int64(gib),
		Description: sdk.String(descriptionOr(opts.Description, opts.Name)),
		ClientToken: sdk.String(fmt.Sprintf("osbuild-%x", tok[:16])),
		Tags:        []ebstypes.Tag{{Key: sdk.String("Name"), Value: sdk.String(opts.Name)}},
	})
	if err != nil {
		return nil, fmt.Errorf("EBS StartSnapshot: %w; check the credentials, the region and the ebs:StartSnapshot permission", err)
	}
	snap := sdk.ToString(start.SnapshotId)
	if bs := sdk.ToInt32(start.BlockSize); bs != 0 && bs != BlockSize {
		return nil, fmt.Errorf("EBS snapshot %s has %d-byte blocks; osbuild writes %d-byte blocks", snap, bs, BlockSize)
	}
	logf("snapshot %s started (%d GiB)", snap, gib)
	failed := func(step string, err error) error {
		return fmt.Errorf("%s for snapshot %s: %w; the snapshot is incomplete: delete it with `aws ec2 delete-snapshot --region %s --snapshot-id %s` and run push again",
			step, snap, err, opts.Region, snap)
	}

	sums, err := putBlocks(ctx, ebsc, snap, f, size, opts.Workers)
	if err != nil {
		return nil, failed("EBS PutSnapshotBlock", err)
	}
	logf("wrote %d non-zero blocks of %d", len(sums), (size+BlockSize-1)/BlockSize)

	// The aggregate: SHA-256 over each written block's SHA-256, in ascending block order (LINEAR).
	idx := make([]int32, 0, len(sums))
	for i := range sums {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	agg := sha256.New()
	for _, i := range idx {
		s := sums[i]
		agg.Write(s[:])
	}
	if _, err := ebsc.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{
		SnapshotId:                sdk.String(snap),
		ChangedBlocksCount:        sdk.Int32(int32(len(sums))),
		Checksum:                  sdk.String(base64.StdEncoding.EncodeToString(agg.Sum(nil))),
		ChecksumAlgorithm:         ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
		ChecksumAggregationMethod: ebstypes.ChecksumAggregationMethodChecksumAggregationLinear,
	}); err != nil {
		return nil, failed("EBS CompleteSnapshot", err)
	}

	logf("waiting for snapshot %s to complete", snap)
	w := ec2.NewSnapshotCompletedWaiter(ec2c, func(o *ec2.SnapshotCompletedWaiterOptions) {
		o.MinDelay = opts.PollInterval
		o.MaxDelay = max(opts.PollInterval, 30*time.Second)
	})
	if err := w.Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}}, opts.WaitTimeout); err != nil {
		return nil, fmt.Errorf("wait for snapshot %s: %w; it may still complete: check with `aws ec2 describe-snapshots --region %s --snapshot-ids %s`",
			snap, err, opts.Region, snap)
	}

	const root = "/dev/xvda"
	img, err := ec2c.RegisterImage(ctx, &ec2.RegisterImageInput{
		Name:               sdk.String(opts.Name),
		Description:        sdk.String(descriptionOr(opts.Description, opts.Name)),
		Architecture:       arch,
		BootMode:           ec2types.BootModeValuesUefi,
		EnaSupport:         sdk.Bool(true),
		ImdsSupport:        ec2types.ImdsSupportValuesV20,
		VirtualizationType: sdk.String("hvm"),
		RootDeviceName:     sdk.String(root),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{
			DeviceName: sdk.String(root),
			Ebs: &ec2types.EbsBlockDevice{
				SnapshotId:          sdk.String(snap),
				VolumeType:          ec2types.VolumeTypeGp3,
				VolumeSize:          sdk.Int32(int32(gib)),
				DeleteOnTermination: sdk.Bool(true),
			},
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("EC2 RegisterImage from snapshot %s: %w; the snapshot is complete: fix the cause (name already taken? ec2:RegisterImage permission?) and register it, or delete it", snap, err)
	}
	logf("registered %s", sdk.ToString(img.ImageId))
	return &Result{SnapshotID: snap, ImageID: sdk.ToString(img.ImageId), VolumeSizeGiB: gib, BlocksWritten: len(sums)}, nil
}

func descriptionOr(d, name string) string {
	if d != "" {
		return d
	}
	return name + " (osbuild)"
}

func ec2Arch(a string) (ec2types.ArchitectureValues, error) {
	switch a {
	case "", "x86_64", "amd64":
		return ec2types.ArchitectureValuesX8664, nil
	case "arm64", "aarch64":
		return ec2types.ArchitectureValuesArm64, nil
	}
	return "", fmt.Errorf("--arch %q: use x86_64 or arm64", a)
}

// putBlocks uploads every 512 KiB block of f that is not all zeros (holes are skipped without reading them,
// with SEEK_DATA/SEEK_HOLE) with up to workers calls in flight. It returns each written block's SHA-256.
func putBlocks(ctx context.Context, c *ebs.Client, snap string, f *os.File, size int64, workers int) (map[int32][32]byte, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idx := make(chan int64, workers)
	go func() {
		defer close(idx)
		fd := int(f.Fd())
		for next := int64(0); next < size; {
			start, err := unix.Seek(fd, next, unix.SEEK_DATA)
			if errors.Is(err, unix.ENXIO) {
				return
			}
			end := size
			if err == nil {
				if e, err := unix.Seek(fd, start, unix.SEEK_HOLE); err == nil {
					end = e
				}
			} else {
				start = next
			}
			for b := max(start/BlockSize, (next+BlockSize-1)/BlockSize); b*BlockSize < end; b++ {
				select {
				case idx <- b:
				case <-ctx.Done():
					return
				}
			}
			next = max((end+BlockSize-1)/BlockSize*BlockSize, next+BlockSize)
		}
	}()

	var mu sync.Mutex
	sums := make(map[int32][32]byte)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, BlockSize)
			zero := make([]byte, BlockSize)
			for b := range idx {
				if ctx.Err() != nil {
					continue
				}
				clear(buf)
				if _, err := f.ReadAt(buf, b*BlockSize); err != nil && !errors.Is(err, io.EOF) {
					cancel(fmt.Errorf("read image at %d: %w", b*BlockSize, err))
					continue
				}
				if bytes.Equal(buf, zero) {
					continue
				}
				sum := sha256.Sum256(buf)
				_, err := c.PutSnapshotBlock(ctx, &ebs.PutSnapshotBlockInput{
					SnapshotId:        sdk.String(snap),
					BlockIndex:        sdk.Int32(int32(b)),
					BlockData:         bytes.NewReader(buf), // seekable: the SDK can retry it
					DataLength:        sdk.Int32(BlockSize),
					Checksum:          sdk.String(base64.StdEncoding.EncodeToString(sum[:])),
					ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
				})
				if err != nil {
					cancel(fmt.Errorf("block %d: %w", b, err))
					continue
				}
				mu.Lock()
				sums[int32(b)] = sum
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return sums, nil
}
