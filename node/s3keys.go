package node

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// S3 credentials. A keys file line "s3 ACCESS_KEY_ID SECRET_ACCESS_KEY rw|ro"
// is an APIKey whose S3 field is set: the S3 gateway (package node/s3)
// checks AWS Signature V4 with the secret, and calls the master on the
// key's behalf with the bearer token S3Token derives from it, so the master
// grants the gateway exactly that key's access (and a client holding the S3
// secret may use the native API with the same token). The secret itself
// never travels. Any key in the file, S3 or not, locks both APIs.

// S3Credential is an AWS-style access key pair.
type S3Credential struct {
	// AccessKeyID names the key in requests (3 to 128 of A-Z a-z 0-9 . _ -).
	AccessKeyID string
	// SecretAccessKey signs them (at least 16 printable ASCII characters).
	SecretAccessKey string
}

// S3Token is the bearer token the master accepts for an S3 credential:
// "s3-" and the hex HMAC-SHA256 of the access key ID under the secret.
func S3Token(accessKeyID, secretAccessKey string) string {
	mac := hmac.New(sha256.New, []byte(secretAccessKey))
	mac.Write([]byte("kvdb s3 gateway token\n" + accessKeyID))
	return "s3-" + hex.EncodeToString(mac.Sum(nil))
}

// parseS3KeyLine parses the fields of a keys file line that starts with
// "s3".
func parseS3KeyLine(f []string) (APIKey, error) {
	if len(f) != 4 {
		return APIKey{}, errors.New(`want "s3 ACCESS_KEY_ID SECRET_ACCESS_KEY rw" or "... ro"`)
	}
	cred := S3Credential{AccessKeyID: f[1], SecretAccessKey: f[2]}
	if err := cred.validate(); err != nil {
		return APIKey{}, err
	}
	k := APIKey{Token: S3Token(cred.AccessKeyID, cred.SecretAccessKey), S3: &cred}
	switch f[3] {
	case "rw":
	case "ro":
		k.ReadOnly = true
	default:
		return APIKey{}, fmt.Errorf("access %q: want rw or ro", f[3])
	}
	return k, nil
}

func (c *S3Credential) validate() error {
	if n := len(c.AccessKeyID); n < 3 || n > 128 {
		return fmt.Errorf("s3 access key id is %d characters, want 3 to 128", n)
	}
	for i := 0; i < len(c.AccessKeyID); i++ {
		ch := c.AccessKeyID[i]
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '.' || ch == '_' || ch == '-') {
			return errors.New("s3 access key id has a character outside A-Z a-z 0-9 . _ -")
		}
	}
	if len(c.SecretAccessKey) < MinTokenLen {
		return fmt.Errorf("s3 secret access key is %d characters, want at least %d", len(c.SecretAccessKey), MinTokenLen)
	}
	for i := 0; i < len(c.SecretAccessKey); i++ {
		if ch := c.SecretAccessKey[i]; ch <= ' ' || ch > '~' {
			return errors.New("s3 secret access key has a character outside printable ASCII")
		}
	}
	return nil
}
