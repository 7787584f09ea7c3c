package lab

import (
	"fmt"
	"strings"
)

// PlainClientBlock names the README's block of commands for a plain
// WireGuard client (wireguard-go configured with wg). The namespace lab
// runs that block word for word, so that the README's steps are the ones
// tested.
const PlainClientBlock = "plain-wireguard-go"

// AddingANodeBlock names the README's file of a target added to a running
// CA lab ("Adding a node"), which lab/readme_test.go loads.
const AddingANodeBlock = "adding-a-node"

// ReadmeBlock returns the body of the fenced code block that follows the
// line "<!-- NAME: …" in a Markdown text. The marker must occur once, so
// that a copy elsewhere in the README cannot silently become the block run.
func ReadmeBlock(text, name string) (string, error) {
	marker := "<!-- " + name + ":"
	lines := strings.Split(text, "\n")
	at := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), marker) {
			if at >= 0 {
				return "", fmt.Errorf("block %q is marked twice (lines %d and %d)", name, at+1, i+1)
			}
			at = i
		}
	}
	if at < 0 {
		return "", fmt.Errorf("no block %q (a line starting %q)", name, marker)
	}
	i := at + 1
	for i < len(lines) && strings.TrimSpace(lines[i]) == "" {
		i++
	}
	if i == len(lines) || !strings.HasPrefix(lines[i], "```") {
		return "", fmt.Errorf("block %q: the marker on line %d is not followed by a code block", name, at+1)
	}
	start := i + 1
	for j := start; j < len(lines); j++ {
		if strings.HasPrefix(lines[j], "```") {
			return strings.Join(lines[start:j], "\n") + "\n", nil
		}
	}
	return "", fmt.Errorf("block %q: the code block from line %d is not closed", name, i+1)
}
