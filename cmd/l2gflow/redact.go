package main

import (
	"bytes"
	"io"
	"sync"

	"github.com/l2gflow/l2gflow/io/storage"
)

// redactingWriter passes whole lines through storage.Redact. A partial
// last line waits for its newline or for Flush, so that a URL split
// across writes is still seen whole.
type redactingWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

func newRedactingWriter(w io.Writer) *redactingWriter { return &redactingWriter{w: w} }

func (r *redactingWriter) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = append(r.buf, p...)
	if i := bytes.LastIndexByte(r.buf, '\n'); i >= 0 {
		if _, err := io.WriteString(r.w, storage.Redact(string(r.buf[:i+1]))); err != nil {
			return 0, err
		}
		r.buf = append(r.buf[:0], r.buf[i+1:]...)
	}
	return len(p), nil
}

// Flush writes a pending partial line.
func (r *redactingWriter) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) == 0 {
		return nil
	}
	_, err := io.WriteString(r.w, storage.Redact(string(r.buf)))
	r.buf = r.buf[:0]
	return err
}
