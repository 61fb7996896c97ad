// Command testinit is sysinit alone as a program: the e2e test boots it when cmd/osbuild does not build
// at the moment (other packages mid-change), so that the init is still tested.
package main

import "osbuild.dev/osbuild/sysinit"

func main() { sysinit.Main() }
