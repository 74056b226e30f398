package main

import (
	"errors"
	"io"
)

// runBench binds the bench flags to bench.Config and runs it.
func runBench(args []string, stdout, stderr io.Writer) error {
	return errors.New("bench: not built yet")
}
