//go:build !noaws

// The AWS SDK adds about 3 MB to the binary, which is also the device-side init and update agent: a
// device build can leave this command out with -tags noaws.

package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"osbuild.dev/osbuild/aws"
)

func init() {
	push := &cobra.Command{
		Use:   "push",
		Short: "Publish a disk image to a cloud",
	}

	var o aws.Options
	awsCmd := &cobra.Command{
		Use:   "aws IMAGE.raw --region R --name N [--arch x86_64|arm64] [--endpoint-url URL]",
		Short: "Create an AMI from a raw disk image (EBS direct APIs + RegisterImage)",
		Long: `Create an Amazon Machine Image from a raw disk image: the non-zero 512 KiB blocks are written straight
into a new EBS snapshot with the EBS direct APIs (no S3 bucket, no VM import role), then the AMI is
registered with UEFI boot, ENA, IMDSv2 only and a gp3 root volume (/dev/xvda) deleted on termination.
Credentials come from the AWS SDK's default chain (AWS_ACCESS_KEY_ID..., AWS_PROFILE, SSO, instance role).
Needed permissions: ebs:StartSnapshot, ebs:PutSnapshotBlock, ebs:CompleteSnapshot, ec2:DescribeSnapshots,
ec2:RegisterImage. Prints the AMI id.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Log = cmd.ErrOrStderr()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := aws.PushAMI(ctx, args[0], o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "osbuild: AMI %s from snapshot %s (%d GiB, %d blocks written)\n",
				res.ImageID, res.SnapshotID, res.VolumeSizeGiB, res.BlocksWritten)
			fmt.Fprintln(cmd.OutOrStdout(), res.ImageID)
			return nil
		},
	}
	f := awsCmd.Flags()
	f.StringVar(&o.Region, "region", "", "AWS region (required)")
	f.StringVar(&o.Name, "name", "", "AMI name, unique in the account and region (required)")
	f.StringVar(&o.Description, "description", "", "AMI and snapshot description (default: NAME (osbuild))")
	f.StringVar(&o.Arch, "arch", "x86_64", "x86_64 or arm64")
	f.StringVar(&o.EndpointURL, "endpoint-url", "", "custom endpoint for EBS and EC2 (LocalStack, tests)")
	f.IntVar(&o.Workers, "workers", 16, "parallel block uploads")
	push.AddCommand(awsCmd)
	addCommand(push)
}
