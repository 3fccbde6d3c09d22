// Command testapp is the workload of kok's end-to-end tests.
//
//	testapp serve            answer HTTP on :8080 with "kok-e2e <hostname>"
//	testapp get URL WANT     GET URL until the body holds WANT (30 s), exit 0
//	testapp write FILE TEXT  write TEXT to FILE
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testapp serve | testapp get URL WANT | testapp write FILE TEXT")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "kok-e2e %s\n", host) })
		srv := &http.Server{Addr: ":8080", ReadHeaderTimeout: 5 * time.Second}
		if err := srv.ListenAndServe(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "get":
		if len(os.Args) != 4 {
			os.Exit(2)
		}
		url, want := os.Args[2], os.Args[3]
		client := &http.Client{Timeout: 3 * time.Second}
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := client.Get(url)
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close() // read to the end already
				if strings.Contains(string(body), want) {
					fmt.Printf("GET %s: %s", url, body)
					return
				}
				err = fmt.Errorf("body %q lacks %q", body, want)
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "GET %s: %v\n", url, err)
				os.Exit(1)
			}
			time.Sleep(500 * time.Millisecond)
		}
	case "write":
		if len(os.Args) != 4 {
			os.Exit(2)
		}
		if err := os.WriteFile(os.Args[2], []byte(os.Args[3]), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		os.Exit(2)
	}
}
