//go:build !linux

package main

// adviseHugePages does nothing here: see hugepages_linux.go.
func adviseHugePages(advised map[uint64]bool) {}
