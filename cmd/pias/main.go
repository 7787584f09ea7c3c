// Command pias runs an anycast overlay node (proxy, target or client), the
// in-process demo, and the tools around them (keys, lab configs).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// command is one subcommand: its one-line summary and its entry point, which
// returns the process exit status.
type command struct {
	summary string
	run     func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

var commands = map[string]command{}

func register(name, summary string, run func([]string, io.Reader, io.Writer, io.Writer) int) {
	commands[name] = command{summary, run}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "pias — a userspace anycast overlay (PIAS over WireGuard)")
	fmt.Fprintln(w, "\nUsage: pias COMMAND [flags]   (pias COMMAND --help for details)\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	case "-version", "--version":
		return runVersion(args[1:], stdin, stdout, stderr)
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "pias: unknown command %q (see pias --help)\n", args[0])
		return 2
	}
	return c.run(args[1:], stdin, stdout, stderr)
}

// flags makes a FlagSet whose --help prints the command's usage to stdout and
// whose errors go to stderr; parse returns -1 to go on, or an exit status.
func flags(name, synopsis string, stdout, stderr io.Writer) (*flag.FlagSet, func([]string) int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	printUsage := func(w io.Writer) {
		fmt.Fprintf(w, "Usage: pias %s\n", synopsis)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs, func(args []string) int {
		err := fs.Parse(args)
		switch {
		case errors.Is(err, flag.ErrHelp):
			printUsage(stdout)
			return 0
		case err != nil:
			fmt.Fprintf(stderr, "pias %s: %v\n", name, err)
			printUsage(stderr)
			return 2
		case fs.NArg() > 0:
			fmt.Fprintf(stderr, "pias %s: unexpected argument %q\n", name, strings.Join(fs.Args(), " "))
			return 2
		}
		return -1
	}
}
