// Package storage reads, writes, lists and tests objects by URI, for local
// paths and gs://bucket/key, on top of Beam's filesystem package so that the
// CLI, the training input and the Beam pipelines all see the same thing.
//
// Writes are atomic: a reader never sees a half-written object under its
// final name. Local files are written to a temporary sibling and renamed;
// GCS objects only appear when their upload is finalised, and an upload that
// fails is cancelled rather than finalised.
package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gcsapi "cloud.google.com/go/storage"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/gcs"   // gs:// scheme
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/local" // plain paths
	"google.golang.org/api/googleapi"
)

// ErrNotExist is returned (wrapped) when an object does not exist.
var ErrNotExist = fs.ErrNotExist

// ErrUnsupportedScheme is returned (wrapped) for a URI of a scheme l2gflow
// does not read (only local paths and gs:// are).
var ErrUnsupportedScheme = errors.New("unsupported scheme")

// ErrTooLarge is returned (wrapped) by ReadFile for an object over its
// size limit.
var ErrTooLarge = errors.New("object larger than the limit")

// Store gives access to objects on every registered filesystem. It keeps one
// filesystem client per scheme (a GCS client is costly to create) and is safe
// for concurrent use. The zero value is not usable: call New.
//
// Operations on remote objects are retried with exponential backoff when
// they fail transiently (HTTP 408, 429, 5xx, reset or cut connections);
// permanent errors (403, 404, bad requests) are returned at once.
type Store struct {
	mu  sync.Mutex
	fss map[string]filesystem.Interface

	// MaxAttempts is the number of tries of a remote operation (default 6).
	MaxAttempts int
	// InitialBackoff is the first wait between tries, doubled each time up
	// to MaxBackoff (defaults 200ms and 5s), with jitter.
	InitialBackoff, MaxBackoff time.Duration
	// AttemptTimeout bounds one try of a remote operation (the storage
	// client retries within it on its own); 0 means none.
	AttemptTimeout time.Duration

	retries atomic.Int64
}

// Options are a Store's retry settings, in a form that can be passed to
// Beam workers (JSON); zero fields take the defaults.
type Options struct {
	MaxAttempts    int           `json:"max_attempts,omitempty"`
	InitialBackoff time.Duration `json:"initial_backoff,omitempty"`
	MaxBackoff     time.Duration `json:"max_backoff,omitempty"`
	// AttemptTimeout bounds one try (default 2 minutes).
	AttemptTimeout time.Duration `json:"attempt_timeout,omitempty"`
}

// New returns a Store with the default retry settings. Close it when done
// to release clients.
func New() *Store { return NewWith(Options{}) }

// NewWith returns a Store with the given retry settings.
func NewWith(o Options) *Store {
	st := &Store{fss: map[string]filesystem.Interface{}, MaxAttempts: 6,
		InitialBackoff: 200 * time.Millisecond, MaxBackoff: 5 * time.Second, AttemptTimeout: 2 * time.Minute}
	if o.MaxAttempts > 0 {
		st.MaxAttempts = o.MaxAttempts
	}
	if o.InitialBackoff > 0 {
		st.InitialBackoff = o.InitialBackoff
	}
	if o.MaxBackoff > 0 {
		st.MaxBackoff = o.MaxBackoff
	}
	if o.AttemptTimeout > 0 {
		st.AttemptTimeout = o.AttemptTimeout
	}
	return st
}

// Retries is the number of retried operations so far.
func (s *Store) Retries() int64 { return s.retries.Load() }

type retryHookKey struct{}

// WithRetryHook returns a context under which the store calls hook each
// time it retries an operation (e.g. to count retries in a metric).
func WithRetryHook(ctx context.Context, hook func(op, uri string, err error)) context.Context {
	return context.WithValue(ctx, retryHookKey{}, hook)
}

// Transient reports whether err is worth retrying: HTTP 408, 429 and 5xx
// from the storage API, and connections refused, reset or cut.
func Transient(err error) bool {
	if err == nil || notExist(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		return ge.Code == 408 || ge.Code == 429 || ge.Code >= 500
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if gcsapi.ShouldRetry(e) {
			return true
		}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"connection reset", "broken pipe", "unexpected EOF", "server closed", "connection refused",
		"status code 408", "status code 429", "status code 500", "status code 502", "status code 503", "status code 504",
		"Service Unavailable", "Too Many Requests", "Internal Server Error", "Bad Gateway", "Gateway Timeout"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// Denied reports whether err is a refusal of access (HTTP 401 or 403, or
// a local permission error): a configuration problem, not a data one.
func Denied(err error) bool {
	if err == nil {
		return false
	}
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		return ge.Code == 401 || ge.Code == 403
	}
	if errors.Is(err, fs.ErrPermission) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "status code 403") || strings.Contains(msg, "status code 401") ||
		strings.Contains(msg, "AccessDenied") || strings.Contains(msg, "Forbidden")
}

// ErrAttemptTimeout marks a try that ran out of its AttemptTimeout: it is
// retried like any transient failure.
var ErrAttemptTimeout = errors.New("storage operation timed out")

// retry runs op, again while it fails transiently on a remote object.
// Each try gets AttemptTimeout.
func (s *Store) retry(ctx context.Context, op, uri string, fn func(ctx context.Context) error) error {
	delay := s.InitialBackoff
	for attempt := 1; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if s.AttemptTimeout > 0 && IsRemote(uri) {
			actx, cancel = context.WithTimeout(ctx, s.AttemptTimeout)
		}
		err := fn(actx)
		if err != nil && ctx.Err() == nil && actx.Err() != nil {
			err = fmt.Errorf("%s %s: %w after %v (%v)", op, uri, ErrAttemptTimeout, s.AttemptTimeout, err)
		}
		cancel()
		if err == nil || !IsRemote(uri) || attempt >= max(1, s.MaxAttempts) || !(Transient(err) || errors.Is(err, ErrAttemptTimeout)) {
			return err
		}
		s.retries.Add(1)
		if hook, ok := ctx.Value(retryHookKey{}).(func(op, uri string, err error)); ok {
			hook(op, uri, err)
		}
		wait := delay/2 + time.Duration(rand.Int64N(int64(delay)/2+1))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return err
		}
		delay = min(2*delay, s.MaxBackoff)
	}
}

// Close releases the filesystem clients the store opened.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for k, f := range s.fss {
		errs = append(errs, f.Close())
		delete(s.fss, k)
	}
	return errors.Join(errs...)
}

// IsRemote reports whether uri names an object in a bucket (gs://...).
func IsRemote(uri string) bool {
	return scheme(uri) != ""
}

func scheme(uri string) string {
	if i := strings.Index(uri, "://"); i > 0 {
		return uri[:i]
	}
	return ""
}

func (s *Store) fsFor(ctx context.Context, uri string) (filesystem.Interface, error) {
	sch := scheme(uri)
	key := sch
	if sch == "gs" {
		// A client binds the emulator address when created; tests start
		// several emulators in one process.
		key += "\x00" + os.Getenv("STORAGE_EMULATOR_HOST")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.fss[key]; ok {
		return f, nil
	}
	if sch != "" && sch != "gs" {
		return nil, fmt.Errorf("%s: %w %q (use a local path or gs://bucket/key)", uri, ErrUnsupportedScheme, sch)
	}
	f, err := filesystem.New(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", uri, err)
	}
	s.fss[key] = f
	return f, nil
}

// Join joins a root URI and path elements with "/" (for gs://) or the OS
// separator (for local paths).
func Join(root string, elem ...string) string {
	if IsRemote(root) {
		parts := append([]string{strings.TrimSuffix(root, "/")}, elem...)
		return strings.Join(parts, "/")
	}
	return filepath.Join(append([]string{root}, elem...)...)
}

// Base returns the last element of a URI.
func Base(uri string) string {
	if IsRemote(uri) {
		return path.Base(uri)
	}
	return filepath.Base(uri)
}

// Dir returns all but the last element of a URI.
func Dir(uri string) string {
	if IsRemote(uri) {
		// Not path.Dir: it would clean "gs://" into "gs:/".
		return uri[:strings.LastIndex(uri, "/")]
	}
	return filepath.Dir(uri)
}

// notExist maps each filesystem's not-found error onto ErrNotExist.
func notExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, gcsapi.ErrObjectNotExist) || errors.Is(err, gcsapi.ErrBucketNotExist)
}

func wrap(op, uri string, err error) error {
	if notExist(err) {
		return fmt.Errorf("%s %s: %w", op, uri, ErrNotExist)
	}
	// A local file's error repeats the operation and path: keep its cause.
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("%s %s: %w", op, uri, err)
}

// Open opens an object for reading.
func (s *Store) Open(ctx context.Context, uri string) (io.ReadCloser, error) {
	f, err := s.fsFor(ctx, uri)
	if err != nil {
		return nil, err
	}
	r, err := f.OpenRead(ctx, uri)
	if err != nil {
		return nil, wrap("open", uri, err)
	}
	return r, nil
}

// ReadFile reads a whole object. If limit > 0 and the object is larger than
// limit bytes, it fails rather than reading it all into memory.
func (s *Store) ReadFile(ctx context.Context, uri string, limit int64) ([]byte, error) {
	var data []byte
	err := s.retry(ctx, "read", uri, func(ctx context.Context) error {
		r, err := s.Open(ctx, uri)
		if err != nil {
			return err
		}
		defer r.Close()
		var src io.Reader = r
		if limit > 0 {
			src = io.LimitReader(r, limit+1)
		}
		if data, err = io.ReadAll(src); err != nil {
			return wrap("read", uri, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if limit > 0 && int64(len(data)) > limit {
		return nil, fmt.Errorf("read %s: %w of %d bytes", uri, ErrTooLarge, limit)
	}
	return data, nil
}

// WriteFile writes data to uri atomically.
func (s *Store) WriteFile(ctx context.Context, uri string, data []byte) error {
	return s.Write(ctx, uri, func(w io.Writer) error {
		_, err := io.Copy(w, bytes.NewReader(data))
		return err
	})
}

// Write calls fill with a writer for uri and publishes the object only if
// fill and the final flush succeed. On failure nothing appears at uri (an
// object that was already there is left as it was). A remote write that
// fails transiently is retried, calling fill again: fill must write the
// same bytes each time.
func (s *Store) Write(ctx context.Context, uri string, fill func(io.Writer) error) error {
	return s.retry(ctx, "write", uri, func(ctx context.Context) error { return s.writeOnce(ctx, uri, fill) })
}

func (s *Store) writeOnce(ctx context.Context, uri string, fill func(io.Writer) error) error {
	f, err := s.fsFor(ctx, uri)
	if err != nil {
		return err
	}
	if !IsRemote(uri) {
		return writeLocal(uri, fill)
	}
	// A GCS upload becomes visible only when the writer is closed; cancelling
	// its context first abandons the upload instead.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := f.OpenWrite(wctx, uri)
	if err != nil {
		return wrap("write", uri, err)
	}
	if err := fill(w); err != nil {
		cancel()
		_ = w.Close()
		return wrap("write", uri, err)
	}
	if err := w.Close(); err != nil {
		return wrap("write", uri, err)
	}
	return nil
}

func writeLocal(name string, fill func(io.Writer) error) error {
	dir := filepath.Dir(name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return wrap("write", name, err)
	}
	// The writer's process id in the name tells a stale temporary file
	// (its writer was killed) from one being written: see CleanStaleTemps.
	tmp, err := os.CreateTemp(dir, fmt.Sprintf(".%s.tmp-%d-*", filepath.Base(name), os.Getpid()))
	if err != nil {
		return wrap("write", name, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := fill(tmp); err != nil {
		return wrap("write", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return wrap("write", name, err)
	}
	if err := tmp.Close(); err != nil {
		return wrap("write", name, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return wrap("write", name, err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return wrap("write", name, err)
	}
	ok = true
	return nil
}

// Exists reports whether an object exists. Errors other than "not found"
// (permissions, network) are returned, not reported as absence.
func (s *Store) Exists(ctx context.Context, uri string) (bool, error) {
	f, err := s.fsFor(ctx, uri)
	if err != nil {
		return false, err
	}
	if !IsRemote(uri) {
		st, err := os.Stat(uri)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return false, nil
			}
			return false, wrap("stat", uri, err)
		}
		return !st.IsDir(), nil
	}
	err = s.retry(ctx, "stat", uri, func(ctx context.Context) error {
		_, err := f.Size(ctx, uri)
		return err
	})
	if err != nil {
		if notExist(err) {
			return false, nil
		}
		return false, wrap("stat", uri, err)
	}
	return true, nil
}

// List returns the URIs of the objects directly or indirectly under prefix
// whose base name matches the glob pattern (e.g. "*.png"; "" matches all),
// sorted. For gs:// it makes one listing request sequence for the prefix;
// locally it walks the directory. A prefix that does not exist gives an
// empty list.
func (s *Store) List(ctx context.Context, prefix, pattern string) ([]string, error) {
	if pattern == "" {
		pattern = "*"
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("list %s: bad pattern %q: %w", prefix, pattern, err)
	}
	f, err := s.fsFor(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var out []string
	if IsRemote(prefix) {
		var uris []string
		err := s.retry(ctx, "list", prefix, func(ctx context.Context) error {
			var err error
			uris, err = f.List(ctx, strings.TrimSuffix(prefix, "/")+"/**")
			return err
		})
		if err != nil {
			return nil, wrap("list", prefix, err)
		}
		for _, u := range uris {
			if ok, _ := path.Match(pattern, path.Base(u)); ok {
				out = append(out, u)
			}
		}
	} else {
		err := filepath.WalkDir(prefix, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) && p == prefix {
					return fs.SkipAll
				}
				return err
			}
			if d.IsDir() {
				return nil
			}
			name := d.Name()
			if strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-") {
				return nil // an unfinished atomic write
			}
			if ok, _ := filepath.Match(pattern, name); ok {
				out = append(out, p)
			}
			return nil
		})
		if err != nil {
			return nil, wrap("list", prefix, err)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Remove deletes an object. Removing an object that does not exist is not an
// error.
func (s *Store) Remove(ctx context.Context, uri string) error {
	f, err := s.fsFor(ctx, uri)
	if err != nil {
		return err
	}
	rm, ok := f.(filesystem.Remover)
	if !ok {
		return fmt.Errorf("remove %s: filesystem cannot remove", uri)
	}
	err = s.retry(ctx, "remove", uri, func(ctx context.Context) error {
		if err := rm.Remove(ctx, uri); err != nil && !notExist(err) {
			return err
		}
		return nil
	})
	if err != nil {
		return wrap("remove", uri, err)
	}
	return nil
}

// CleanStaleTemps removes the temporary files that local atomic writes left
// under dir (and its subdirectories, three levels down: the run records' parts) when their process
// was killed before renaming them: files named .<name>.tmp-<pid>-* whose
// process no longer runs. Remote URIs have no such files (an upload
// appears whole or not at all) and are left alone. It returns how many
// files it removed.
func CleanStaleTemps(dir string) (int, error) {
	if IsRemote(dir) {
		return 0, nil
	}
	removed := 0
	for _, pattern := range []string{".*.tmp-*", "*/.*.tmp-*", "*/*/.*.tmp-*", "*/*/*/.*.tmp-*"} {
		matches, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return removed, err
		}
		for _, m := range matches {
			base := filepath.Base(m)
			rest := base[strings.LastIndex(base, ".tmp-")+len(".tmp-"):]
			pidText, _, ok := strings.Cut(rest, "-")
			pid, err := strconv.Atoi(pidText)
			if !ok || err != nil || pid == os.Getpid() || processRuns(pid) {
				continue
			}
			if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return removed, wrap("remove", m, err)
			}
			removed++
		}
	}
	return removed, nil
}

// processRuns reports whether a process with this id exists on this
// machine (signal 0 checks without signalling).
func processRuns(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, syscall.EPERM)
}
