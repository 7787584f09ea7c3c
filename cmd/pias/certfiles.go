package main

import (
	"crypto/ed25519"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/pias-net/pias/cert"
)

// The files of pias ca and pias cert: read with a size bound, written whole or not at all.

// readFile reads at most cert.MaxArmoredSize bytes of path; errors are
// "PATH: reason", a bad input.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, badInput("%s: %v", path, pathErr(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, cert.MaxArmoredSize+1))
	if err != nil {
		return nil, badInput("%s: %v", path, pathErr(err))
	}
	if len(b) > cert.MaxArmoredSize {
		return nil, badInput("%s: larger than %d bytes: not a certificate or revocation list", path, cert.MaxArmoredSize)
	}
	return b, nil
}

func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readObject reads a certificate, CA certificate or revocation list file.
func readObject(path string) (any, error) {
	text, err := readFile(path)
	if err != nil {
		return nil, err
	}
	typ, _, err := cert.Unarmor(text)
	if err != nil {
		return nil, badInput("%s: %v", path, err)
	}
	var obj any
	switch typ {
	case cert.TypeCertificate:
		obj, err = cert.ParsePEM(text)
	case cert.TypeCA:
		obj, err = cert.ParseCAPEM(text)
	case cert.TypeRevocationList:
		obj, err = cert.ParseRevocationListPEM(text)
	case cert.TypeCAKey:
		return nil, badInput("%s: a CA private key; not shown", path)
	default:
		return nil, badInput("%s: a %q block, not a pias certificate or revocation list", path, typ)
	}
	if err != nil {
		return nil, badInput("%s: %v", path, err)
	}
	return obj, nil
}

// loadCA reads DIR/ca.pem, checks its self-signature, and with withKey
// reads DIR/ca.key and checks it is the CA's.
func loadCA(dir string, withKey bool) (*cert.CA, ed25519.PrivateKey, error) {
	certPath := filepath.Join(dir, caCertFile)
	text, err := readFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	ca, err := cert.ParseCAPEM(text)
	if err != nil {
		return nil, nil, badInput("%s: %v", certPath, err)
	}
	if err := ca.CheckSignature(); err != nil {
		return nil, nil, badInput("%s: %v", certPath, err)
	}
	if !withKey {
		return ca, nil, nil
	}
	keyPath := filepath.Join(dir, caKeyFile)
	text, err = readFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	key, err := cert.ParseKeyPEM(text)
	if err != nil {
		return nil, nil, badInput("%s: %v", keyPath, err)
	}
	if !key.Public().(ed25519.PublicKey).Equal(ca.PublicKey) {
		return nil, nil, badInput("%s is not the key of %s", keyPath, certPath)
	}
	return ca, key, nil
}

// loadRevoked reads DIR/revoked.pem if there is one, and checks it is
// signed by the pool's CA.
func loadRevoked(dir string, pool *cert.Pool) (*cert.RevocationList, error) {
	path := filepath.Join(dir, revokedFile)
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	text, err := readFile(path)
	if err != nil {
		return nil, err
	}
	rl, err := cert.ParseRevocationListPEM(text)
	if err != nil {
		return nil, badInput("%s: %v", path, err)
	}
	if _, err := pool.VerifyRevocationList(rl); err != nil {
		return nil, invalid("%s: %v", path, err)
	}
	return rl, nil
}

// writeFileAtomic writes data to path with mode perm through a temporary
// file in the same directory and a rename, so that path is either absent,
// as it was, or complete. Unless replace is set, an existing path is an
// error (os.ErrExist).
func writeFileAtomic(path string, data []byte, perm os.FileMode, replace bool) error {
	if !replace {
		if _, err := os.Lstat(path); err == nil {
			return &fs.PathError{Op: "create", Path: path, Err: fs.ErrExist}
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	fail := func(err error) error {
		tmp.Close()
		os.Remove(name)
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if !replace {
		// Link fails if path appeared meanwhile, where rename would
		// replace it; file systems without links get the rename.
		err := os.Link(name, path)
		if err == nil || errors.Is(err, fs.ErrExist) {
			os.Remove(name)
			return err
		}
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return err
	}
	return nil
}

// loadCAPool loads the CA in dir (with its key if withKey), a pool of it,
// and the revocation list it holds (nil if none yet).
func loadCAPool(dir string, withKey bool) (*cert.CA, ed25519.PrivateKey, *cert.Pool, *cert.RevocationList, error) {
	ca, key, err := loadCA(dir, withKey)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	pool, err := cert.NewPool(ca)
	if err != nil {
		return nil, nil, nil, nil, invalid("%s: %v", filepath.Join(dir, caCertFile), err)
	}
	held, err := loadRevoked(dir, pool)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return ca, key, pool, held, nil
}
