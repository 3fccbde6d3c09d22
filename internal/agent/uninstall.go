package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"
)

// Uninstall stops the daemon and every service, runs each applied
// component's uninstall script (last installed first) and removes the
// agent's state. The host is left as it was before kok came.
func Uninstall(ctx context.Context, p Paths) error {
	if pid, ok := daemonPid(p); ok {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 50 && alive(pid); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
	a := &Applier{Paths: p}
	d, _ := ReadDesired(p.Desired())
	sup := NewSupervisor(p.ServiceDir())
	applied := a.Applied()
	// Adopt and stop every service that was started.
	for _, c := range applied {
		sup.Adopt(c.Services)
	}
	sup.StopAll()
	var order []string
	if d != nil {
		for _, c := range d.Components {
			order = append(order, c.Name)
		}
	}
	for name := range applied {
		if !slices.Contains(order, name) {
			order = append(order, name)
		}
	}
	slices.Reverse(order)
	var errs []error
	for _, name := range order {
		c, ok := applied[name]
		if !ok {
			continue
		}
		if err := a.run(ctx, c, "uninstall", c.Scripts.Uninstall); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, art := range c.Artifacts {
			_ = os.Remove(art.Path)
		}
		for _, f := range c.Files {
			_ = os.Remove(f.Path)
		}
		_ = a.Forget(name)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := os.RemoveAll(p.Dir); err != nil {
		return fmt.Errorf("removing %s: %w", p.Dir, err)
	}
	return nil
}
