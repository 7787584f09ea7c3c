// Command labserver is the namespace lab's stand-in for real services and
// clients: an HTTP server and a UDP echo that name the target in every
// answer, and a UDP client that asks once and prints the answer.
//
//	labserver serve -name t1 [-http :8080] [-udp :8053]
//	labserver ask-udp ADDR:PORT MESSAGE
//	labserver labjson LAB.JSON nodes | names ROLE | service NAME | group I | endpoint NAME
//	labserver hammer URL DURATION INTERVAL     requests until DURATION, then a summary
//	labserver rtt-udp ADDR:PORT COUNT          COUNT requests one at a time: "answered median_µs p99_µs"
//	labserver readme-block README.md NAME      the README's code block marked NAME (lab.ReadmeBlock)
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/pias-net/pias/lab"
	"github.com/pias-net/pias/router"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"flag"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: labserver serve -name NAME [-http ADDR] [-udp ADDR] | labserver ask-udp ADDR MESSAGE")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "labjson":
		if err := labJSON(os.Stdout, os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "labserver labjson:", err)
			os.Exit(2)
		}
	case "readme-block":
		if len(os.Args) != 4 {
			fmt.Fprintln(os.Stderr, "usage: labserver readme-block README.md NAME")
			os.Exit(2)
		}
		readme, err := os.ReadFile(os.Args[2])
		if err == nil {
			var block string
			if block, err = lab.ReadmeBlock(string(readme), os.Args[3]); err == nil {
				_, err = io.WriteString(os.Stdout, block)
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "labserver readme-block %s: %v\n", os.Args[2], err)
			os.Exit(1)
		}
	case "hammer":
		if len(os.Args) != 5 {
			fmt.Fprintln(os.Stderr, "usage: labserver hammer URL DURATION INTERVAL")
			os.Exit(2)
		}
		hammer(os.Args[2], os.Args[3], os.Args[4])
	case "ask-udp":
		if len(os.Args) != 4 {
			fmt.Fprintln(os.Stderr, "usage: labserver ask-udp ADDR:PORT MESSAGE")
			os.Exit(2)
		}
		askUDP(os.Args[2], os.Args[3])
	case "rtt-udp":
		if len(os.Args) != 4 {
			fmt.Fprintln(os.Stderr, "usage: labserver rtt-udp ADDR:PORT COUNT")
			os.Exit(2)
		}
		rttUDP(os.Args[2], os.Args[3])
	default:
		fmt.Fprintf(os.Stderr, "labserver: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	name := fs.String("name", "", "the target's name, put in every answer")
	httpAddr := fs.String("http", "", "serve HTTP here")
	udpAddr := fs.String("udp", "", "serve a UDP echo here")
	fs.Parse(args)
	if *httpAddr != "" {
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "labserver:", err)
			os.Exit(1)
		}
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s: %s %s from %s\n", *name, r.Method, r.URL.Path, r.RemoteAddr)
		}))
	}
	if *udpAddr != "" {
		pc, err := net.ListenPacket("udp", *udpAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "labserver:", err)
			os.Exit(1)
		}
		go func() {
			buf := make([]byte, 65536)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(append([]byte(*name+": "), buf[:n]...), from)
			}
		}()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}

// askUDP sends MESSAGE until an answer comes (at most 10 tries, 1 s apart).
func askUDP(addr, msg string) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "labserver:", err)
		os.Exit(1)
	}
	buf := make([]byte, 65536)
	for try := 0; try < 10; try++ {
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil {
			fmt.Println(string(buf[:n]))
			return
		}
	}
	fmt.Fprintf(os.Stderr, "labserver: no answer from %s\n", addr)
	os.Exit(1)
}

// rttUDP sends count small requests to addr one after another (each waits
// up to a second for its answer) and prints how many were answered and the
// median and 99th percentile of their round trips in microseconds.
func rttUDP(addr, count string) {
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 {
		fmt.Fprintf(os.Stderr, "labserver: count %q is not a positive number\n", count)
		os.Exit(2)
	}
	c, err := net.Dial("udp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "labserver:", err)
		os.Exit(1)
	}
	buf := make([]byte, 65536)
	msg := make([]byte, 32)
	var rtts []time.Duration
	for i := range n {
		binary.BigEndian.PutUint64(msg, uint64(i))
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			continue
		}
		c.SetReadDeadline(start.Add(time.Second))
		for {
			m, err := c.Read(buf)
			if err != nil {
				break
			}
			// The answer echoes the request after the target's name; a late
			// answer to an earlier request is skipped.
			if m >= len(msg) && bytes.Equal(buf[m-len(msg):m], msg) {
				rtts = append(rtts, time.Since(start))
				break
			}
		}
	}
	if len(rtts) == 0 {
		fmt.Fprintf(os.Stderr, "labserver: no answer from %s\n", addr)
		os.Exit(1)
	}
	slices.Sort(rtts)
	pct := func(p int) int64 { return rtts[(len(rtts)-1)*p/100].Microseconds() }
	fmt.Println(len(rtts), pct(50), pct(99))
}

// labJSON answers the lab script's questions about a generated lab.
func labJSON(w io.Writer, args []string) error {
	if len(args) < 2 {
		return errors.New("usage: labjson LAB.JSON QUERY [ARG]")
	}
	l, err := lab.ReadLab(args[0])
	if err != nil {
		return err
	}
	arg := ""
	if len(args) > 2 {
		arg = args[2]
	}
	node := func() (*lab.Node, error) {
		if n := l.Node(arg); n != nil {
			return n, nil
		}
		return nil, fmt.Errorf("no node %q", arg)
	}
	switch args[1] {
	case "nodes": // NAME UNDERLAY-IP CLUSTER (an edge's cluster is its home proxy's)
		for _, n := range l.Nodes {
			cluster := n.Cluster
			if h := l.Node(n.Home); h != nil {
				cluster = h.Cluster
			}
			fmt.Fprintln(w, n.Name, n.Endpoint.Addr(), cluster)
		}
	case "names":
		for _, n := range l.Role(arg) {
			fmt.Fprintln(w, n.Name)
		}
	case "service": // PORT PROTO of the target's first group
		n, err := node()
		if err != nil {
			return err
		}
		if len(n.Groups) == 0 {
			return fmt.Errorf("%s joins no group", arg)
		}
		g, err := router.ParseGroup(n.Groups[0].Group)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, n.Groups[0].Port, router.ProtoName(g.Proto))
	case "group":
		i, err := strconv.Atoi(arg)
		if err != nil || i < 0 || i >= len(l.Groups) {
			return fmt.Errorf("no group %q", arg)
		}
		fmt.Fprintln(w, l.Groups[i])
	case "home": // an edge's home proxy
		n, err := node()
		if err != nil {
			return err
		}
		fmt.Fprintln(w, n.Home)
	case "endpoint":
		n, err := node()
		if err != nil {
			return err
		}
		fmt.Fprintln(w, n.Endpoint)
	default:
		return fmt.Errorf("unknown query %q", args[1])
	}
	return nil
}

// hammer sends one HTTP request every interval until duration has passed or
// SIGTERM comes, each with a short timeout, and prints one summary line:
// requests, failures, and the longest time without a successful answer.
func hammer(url, duration, interval string) {
	d, err1 := time.ParseDuration(duration)
	iv, err2 := time.ParseDuration(interval)
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "labserver hammer: bad duration")
		os.Exit(2)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	client := &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	lastOK := start
	var requests, failures int
	var gap time.Duration
	tick := time.NewTicker(iv)
	defer tick.Stop()
	for time.Since(start) < d {
		requests++
		resp, err := client.Get(url)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("%s", resp.Status)
			}
		}
		now := time.Now()
		if err != nil {
			failures++
		} else {
			gap = max(gap, now.Sub(lastOK))
			lastOK = now
		}
		select {
		case <-tick.C:
		case <-stop:
			d = 0
		}
	}
	gap = max(gap, time.Since(lastOK))
	fmt.Printf("requests %d failures %d longest_gap_ms %d\n", requests, failures, gap.Milliseconds())
}
