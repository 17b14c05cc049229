// immudb-bench: the immudb side of issue 11's side-by-side comparison. It loads an
// immudb server (synced: it fsyncs before it answers, like sealtrail) for a fixed time
// from N concurrent sessions, each sending either SetAll requests of B key-values of
// ~350-byte values (B=100: "batches") or single Set requests (B=1), and prints one
// machine-readable line: committed entries per second and the latency percentiles.
//
// bench/immudb.sh builds it inside immudb's own module (so it uses exactly that
// release's client) and runs it; it is not part of the sealtrail build.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/codenotary/immudb/pkg/api/schema"
	immudb "github.com/codenotary/immudb/pkg/client"
)

func main() {
	addr := flag.String("address", "127.0.0.1", "immudb address")
	port := flag.Int("port", 3322, "immudb port")
	conns := flag.Int("connections", 16, "concurrent sessions")
	batch := flag.Int("batch", 100, "key-values per request (1: Set, more: SetAll)")
	seconds := flag.Int("seconds", 10, "how long to load the server")
	valueSize := flag.Int("value-bytes", 350, "bytes per value")
	database := flag.String("database", "bench", "database to create and load (its concurrency limit is raised to --connections: immudb refuses more than 30 concurrent writes by default)")
	flag.Parse()

	{
		ctx := context.Background()
		admin := immudb.NewClient().WithOptions(immudb.DefaultOptions().WithAddress(*addr).WithPort(*port))
		if err := admin.OpenSession(ctx, []byte("immudb"), []byte("immudb"), "defaultdb"); err != nil {
			fmt.Fprintf(os.Stderr, "admin session: %v\n", err)
			os.Exit(1)
		}
		limit := uint32(*conns)
		if limit < 30 {
			limit = 30
		}
		settings := &schema.DatabaseNullableSettings{MaxConcurrency: &schema.NullableUint32{Value: limit}}
		if _, err := admin.CreateDatabaseV2(ctx, *database, settings); err != nil {
			fmt.Fprintf(os.Stderr, "create database %s: %v\n", *database, err)
			os.Exit(1)
		}
		admin.CloseSession(ctx)
	}

	value := []byte(strings.Repeat("v", *valueSize))
	deadline := time.Now().Add(time.Duration(*seconds) * time.Second)
	var mu sync.Mutex
	var latencies []time.Duration
	var failures int
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < *conns; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			ctx := context.Background()
			opts := immudb.DefaultOptions().WithAddress(*addr).WithPort(*port)
			client := immudb.NewClient().WithOptions(opts)
			if err := client.OpenSession(ctx, []byte("immudb"), []byte("immudb"), *database); err != nil {
				fmt.Fprintf(os.Stderr, "session %d: %v\n", c, err)
				os.Exit(1)
			}
			defer client.CloseSession(ctx)
			var mine []time.Duration
			bad := 0
			for n := 0; time.Now().Before(deadline); n++ {
				t := time.Now()
				var err error
				if *batch == 1 {
					_, err = client.Set(ctx, []byte(fmt.Sprintf("k-%d-%d", c, n)), value)
				} else {
					kvs := make([]*schema.KeyValue, *batch)
					for i := range kvs {
						kvs[i] = &schema.KeyValue{Key: []byte(fmt.Sprintf("k-%d-%d-%d", c, n, i)), Value: value}
					}
					_, err = client.SetAll(ctx, &schema.SetRequest{KVs: kvs})
				}
				if err != nil {
					bad++
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			failures += bad
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	if firstErr != nil {
		fmt.Fprintf(os.Stderr, "%d requests failed; the first: %v\n", failures, firstErr)
	}
	elapsed := time.Since(start).Seconds()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	fmt.Printf("IMMUDB requests=%d entries_per_s=%.0f batch=%d connections=%d p50_ms=%.2f p99_ms=%.2f failed=%d seconds=%.2f\n",
		len(latencies), float64(len(latencies)**batch)/elapsed, *batch, *conns, pct(0.50), pct(0.99), failures, elapsed)
}
