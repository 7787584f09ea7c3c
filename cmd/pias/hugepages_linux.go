package main

import (
	"bufio"
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// adviseHugePages asks the kernel to back this process's anonymous
// read-write mappings of at least 2 MiB with huge pages (MADV_HUGEPAGE),
// each mapping once (advised holds their starts). Most distributions give
// huge pages only where asked ("madvise" in
// /sys/kernel/mm/transparent_hugepage/enabled), and Go does not ask. A
// simulation of 10,000 proxies reads a few GiB at random, one message to
// one proxy's state after another, and with 4 KiB pages nearly every read
// also misses the TLB.
func adviseHugePages(advised map[uint64]bool) {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// "start-end perms offset dev inode [path]"
		f := bytes.Fields(sc.Bytes())
		if len(f) != 5 || string(f[1]) != "rw-p" {
			continue
		}
		lo, hi, ok := bytes.Cut(f[0], []byte("-"))
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(string(lo), 16, 64)
		end, err2 := strconv.ParseUint(string(hi), 16, 64)
		if err1 != nil || err2 != nil || end-start < 2<<20 || advised[start] {
			continue
		}
		advised[start] = true
		unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_HUGEPAGE)
		// What is there already stays in small pages until khugepaged
		// gets to it (minutes): collapse it now (Linux 6.1 on; an error
		// leaves it as it was).
		unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_COLLAPSE)
	}
}
