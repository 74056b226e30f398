package s3

import (
	"context"
	"testing"

	"github.com/kvdb/kvdb/bench"
)

// TestBenchS3 drives a signed gateway with kvdb bench --s3: its Signature
// V4 is accepted, every byte read back matches, and a wrong secret is
// refused before anything is written.
func TestBenchS3(t *testing.T) {
	e := newEnv(t, true)
	cfg := bench.Config{
		URL: "http://" + e.endpoint, Size: bench.SizeRange{Min: 64 << 10, Max: 64 << 10},
		Count: 24, Concurrency: 4, Verify: true, Prefix: "benchs3/run/",
		S3: &bench.S3Credentials{AccessKeyID: testID, SecretAccessKey: testSecret},
	}
	cfg.Ops, _ = bench.ParseMix("put,get,head,delete")
	res, err := bench.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range res.Ops {
		if op.Errors != 0 || op.Count == 0 {
			t.Errorf("%s: %d done, %d errors (first: %s), want all done", op.Op, op.Count, op.Errors, op.FirstErr)
		}
	}
	cfg.S3 = &bench.S3Credentials{AccessKeyID: testID, SecretAccessKey: "not-the-secret-0123456789"}
	if _, err := bench.Run(context.Background(), cfg); err == nil {
		t.Error("a run signed with a wrong secret: no error, want the bucket's creation refused")
	}
}
