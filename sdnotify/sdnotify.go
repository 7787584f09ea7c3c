// Package sdnotify is the few lines of systemd's readiness protocol a
// Type=notify service needs (sd_notify(3), without libsystemd or cgo): one
// datagram to the unix socket $NOTIFY_SOCKET names, holding
// newline-separated VAR=VALUE assignments.
package sdnotify

import (
	"net"
	"os"
)

// States a service reports.
const (
	Ready    = "READY=1"    // start-up is over: systemd starts what waits for the unit
	Stopping = "STOPPING=1" // the service is shutting down
)

// Notify sends state to the service manager. It does nothing and returns
// false when $NOTIFY_SOCKET is unset: the process was not started by
// systemd as a Type=notify service.
func Notify(state string) (bool, error) {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return false, nil
	}
	// "@name" is an abstract socket; package net maps the @ to the
	// leading NUL on Linux.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return false, err
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, err
	}
	return true, nil
}

// UnderSystemd says whether systemd started this process (it sets
// INVOCATION_ID for every service, JOURNAL_STREAM when the output goes to
// the journal). journald stamps every line itself, so a log that stamps
// its own writes each time twice.
func UnderSystemd() bool {
	return os.Getenv("INVOCATION_ID") != "" || os.Getenv("JOURNAL_STREAM") != ""
}
