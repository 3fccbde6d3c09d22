// Command kok-agent is kok's node agent: it runs on every host a Machine
// describes and keeps the host's components at their final state.
//
//	kok-agent apply [--dir D] [-f FILE]   store a desired state (stdin by default), start or wake the daemon
//	kok-agent run [--dir D]               the daemon: apply, supervise services, re-check, report
//	kok-agent status [--dir D]            print the daemon's last report (JSON)
//	kok-agent uninstall [--dir D]         stop the services and run every uninstall script, last first
//	kok-agent probe URL                   exit 0 when URL answers 2xx (for check scripts on hosts without curl)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kubeonkube/kok/internal/agent"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	dir := fs.String("dir", agent.DefaultDir, "the agent's state directory")
	file := fs.String("f", "-", "desired state file (apply); - reads stdin")
	_ = fs.Parse(os.Args[2:])
	p := agent.Paths{Dir: *dir}
	var err error
	switch cmd {
	case "apply":
		err = apply(p, *file)
	case "run":
		err = run(*dir)
	case "status":
		var data []byte
		if data, err = os.ReadFile(p.Status()); err == nil {
			_, err = os.Stdout.Write(append(data, '\n'))
		}
	case "uninstall":
		err = agent.Uninstall(context.Background(), p)
	case "probe":
		err = probe(fs.Arg(0))
	case "version":
		fmt.Println("kok-agent")
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kok-agent:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return agent.NewDaemon(dir).Run(ctx)
}

func apply(p agent.Paths, file string) error {
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	return agent.Submit(p, data, self)
}

func probe(url string) error {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kok-agent apply|run|status|uninstall|probe|version [--dir DIR] [-f FILE]")
	os.Exit(2)
}
