package artifacts

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// PEM block types of key files.
const (
	privateKeyPEM = "POLICYD ED25519 PRIVATE KEY" // the 32-byte seed
	publicKeyPEM  = "POLICYD ED25519 PUBLIC KEY"  // the 32-byte public key
)

// Signature is manifest.sig: an ed25519 signature over the exact manifest.json bytes.
type Signature struct {
	KeyID     string `json:"key_id"`    // KeyID of the signing key's public key
	Signature string `json:"signature"` // standard base64 of the 64-byte signature
}

// KeyID names a public key: the hex of the first 8 bytes of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	s := sha256.Sum256(pub)
	return hex.EncodeToString(s[:8])
}

// SignManifest returns the manifest.sig bytes signing manifest (the manifest.json bytes).
func SignManifest(manifest []byte, key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("ed25519 private key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	sig := Signature{
		KeyID:     KeyID(key.Public().(ed25519.PublicKey)),
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, manifest)),
	}
	b, err := json.MarshalIndent(sig, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// checkSignature verifies sigFile (manifest.sig bytes) over manifest with one of trusted and
// returns the key ID of the key that verified it.
func checkSignature(manifest, sigFile []byte, trusted []ed25519.PublicKey) (string, error) {
	var sig Signature
	if err := decodeStrict(sigFile, &sig); err != nil {
		return "", fmt.Errorf("malformed signature file: %v", err)
	}
	raw, err := base64.StdEncoding.DecodeString(sig.Signature)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return "", fmt.Errorf("malformed signature (want %d bytes of base64)", ed25519.SignatureSize)
	}
	known := false
	for _, k := range trusted {
		if KeyID(k) != sig.KeyID {
			continue
		}
		known = true
		if ed25519.Verify(k, manifest, raw) {
			return sig.KeyID, nil
		}
	}
	if !known {
		return "", fmt.Errorf("signed by key %s, which is not trusted", sig.KeyID)
	}
	return "", fmt.Errorf("bad signature: manifest.json does not match the signature of key %s", sig.KeyID)
}

// MarshalPrivateKey returns the PEM of a private key file.
func MarshalPrivateKey(key ed25519.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: privateKeyPEM, Bytes: key.Seed()})
}

// MarshalPublicKey returns the PEM of a public key file.
func MarshalPublicKey(pub ed25519.PublicKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: publicKeyPEM, Bytes: pub})
}

func pemBlock(b []byte, typ string, size int) ([]byte, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	if blk.Type != typ {
		return nil, fmt.Errorf("PEM block is %q, want %q", blk.Type, typ)
	}
	if len(blk.Bytes) != size {
		return nil, fmt.Errorf("%s has %d bytes, want %d", typ, len(blk.Bytes), size)
	}
	return blk.Bytes, nil
}

// ParsePrivateKey parses a private key file.
func ParsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	seed, err := pemBlock(b, privateKeyPEM, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// ParsePublicKey parses a public key file.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	k, err := pemBlock(b, publicKeyPEM, ed25519.PublicKeySize)
	if err != nil {
		return nil, err
	}
	return ed25519.PublicKey(k), nil
}

// LoadPrivateKey reads a private key file; one that others may read (mode & 0077) is refused.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("private key %s: permissions %04o are too open (chmod 600 %s)", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	k, err := ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %v", path, err)
	}
	return k, nil
}

// LoadPublicKey reads a public key file.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %v", path, err)
	}
	return k, nil
}

// GenerateKeyFiles makes a new key pair and writes NAME.key (private, mode 0600) and NAME.pub.
// It refuses to overwrite either file. It returns the public key.
func GenerateKeyFiles(name string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	keyPath, pubPath := name+".key", name+".pub"
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("%s exists; not overwriting a key", p)
		}
	}
	if err := writeNew(keyPath, MarshalPrivateKey(priv), 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(pubPath, MarshalPublicKey(pub), 0o644); err != nil {
		os.Remove(keyPath)
		return nil, err
	}
	return pub, nil
}

// writeNew creates path (never overwriting), writes b and syncs it.
func writeNew(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists; not overwriting it", path)
		}
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir fsyncs a folder so that the entries made in it survive a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
