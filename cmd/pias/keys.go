package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/pias-net/pias/config"
)

func init() {
	register("genkey", "print a new WireGuard private key (like wg genkey)", genkey)
	register("pubkey", "read a private key on stdin, print its public key (like wg pubkey)", pubkey)
}

func genkey(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	_, parse := flags("genkey", "genkey > private.key", stdout, stderr)
	if rc := parse(args); rc >= 0 {
		return rc
	}
	k, err := config.GeneratePrivateKey()
	if err != nil {
		fmt.Fprintf(stderr, "pias genkey: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, k)
	return 0
}

func pubkey(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	_, parse := flags("pubkey", "pubkey < private.key > public.key", stdout, stderr)
	if rc := parse(args); rc >= 0 {
		return rc
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, 1024)).ReadString('\n')
	if err != nil && err != io.EOF {
		fmt.Fprintf(stderr, "pias pubkey: read stdin: %v\n", err)
		return 1
	}
	k, err := config.ParseKey(strings.TrimSpace(line))
	if err != nil {
		fmt.Fprintf(stderr, "pias pubkey: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, k.PublicKey())
	return 0
}
