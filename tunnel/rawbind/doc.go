// Package rawbind is a conn.Bind for wireguard-go over UDP sockets whose
// data-path system calls (recvmmsg, sendmmsg) bypass the Go scheduler's
// system-call path. Elsewhere than Linux, New returns wireguard-go's own
// StdNetBind.
//
// Why: a Go system call (syscall.Syscall) tells the scheduler it may block.
// On a node that runs on one P (package cores), the runtime's sysmon then
// wakes every 20 µs while the node is busy, takes the P back from any call
// that spans two of its looks and hands it to another thread, and is woken
// again by the first call after each idle spell. On the shared 2-core VM of
// the namespace lab that cost a proxy 7 % of its CPU at full rate and 20 %
// at 400 Mbit/s (perf, by call stack). The sockets here are non-blocking, so
// neither call ever blocks: when there is nothing to read, or no room to
// send, the goroutine waits on the netpoller (syscall.RawConn), as the net
// package's own reads do.
//
// It does what StdNetBind does on Linux: an IPv4 and an IPv6 socket on one
// port, UDP GSO on send (UDP_SEGMENT, each datagram of a run its own iovec,
// so nothing is copied) and GRO on receive (UDP_GRO, split into the
// caller's buffers), and sticky source addresses (IP_PKTINFO and
// IPV6_PKTINFO): a reply leaves from the address its peer wrote to.
package rawbind
