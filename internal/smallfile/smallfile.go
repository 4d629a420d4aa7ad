// Package smallfile reads the small files a configuration names (tokens,
// certificates, keys, CA bundles) without trusting what the name points
// at: only a regular file is read, up to a bound, and opening it never
// waits. A FIFO would otherwise hold the reader (a reload, a PUT /config)
// until something writes to it, and a device such as /dev/zero would be
// read until memory runs out.
package smallfile

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// Open opens path for reading if it is a regular file. The type is that
// of the file opened (without waiting), not of the name looked at before,
// which a rename could change in between. Errors do not repeat the path
// when the caller's message names it: an *fs.PathError is returned as is
// for the caller to unwrap or keep.
func Open(path string) (*os.File, error) {
	f, _, err := open(path)
	return f, err
}

func open(path string) (*os.File, fs.FileInfo, error) {
	f, err := openNoWait(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		what := "not a regular file"
		if fi.IsDir() {
			what = "is a directory"
		}
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: errors.New(what)}
	}
	return f, fi, nil
}

// Read reads the regular file at path, refusing one over max bytes.
// Its errors are *fs.PathError; Reason drops the path from them for a
// caller that names it already.
func Read(path string, max int64) ([]byte, error) {
	f, fi, err := open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tooBig := func(n int64) error {
		return &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%d bytes, over the %d such a file may hold", n, max)}
	}
	if fi.Size() > max {
		return nil, tooBig(fi.Size())
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, tooBig(int64(len(b))) // grown since it was looked at
	}
	return b, nil
}

// Reason is err without the path an *fs.PathError adds.
func Reason(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// MaxPEM bounds a certificate, key or CA bundle file: a chain is a few
// KiB, a system's whole CA bundle some 200 KiB.
const MaxPEM = 1 << 20

// MaxToken bounds a token file.
const MaxToken = 64 << 10

// LoadKeyPair is tls.LoadX509KeyPair reading its files as Read does,
// each at most MaxPEM bytes. Errors that are the key file's (reading it,
// no key in it, not the certificate's key) are *KeyFileError, so that a
// caller names the right field.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := Read(certFile, MaxPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := Read(keyFile, MaxPEM)
	if err != nil {
		return tls.Certificate{}, &KeyFileError{err}
	}
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if msg := err.Error(); strings.Contains(msg, "key input") || strings.Contains(msg, "private key") {
			err = &KeyFileError{err}
		}
	}
	return kp, err
}

// KeyFileError is an error of LoadKeyPair's key file.
type KeyFileError struct{ Err error }

func (e *KeyFileError) Error() string { return e.Err.Error() }
func (e *KeyFileError) Unwrap() error { return e.Err }
