// Package redistest runs a real redis-server for tests and the bench: on a
// free loopback port, with nothing saved to disk. Start stops it when the
// test ends and, where redis-server is not installed, skips the test with
// the command that installs it; CI installs it, so there the tests always
// run.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Install is how to get redis-server on the Debian machines CI runs on.
const Install = "sudo apt-get install -y redis-server"

// ErrNotInstalled is Launch's error when redis-server is not in PATH.
var ErrNotInstalled = errors.New("redis-server is not installed; install it with: " + Install)

// Server is a redis-server started by a test.
type Server struct {
	// Addr is its host:port on loopback; URL the same as a redis:// URL.
	Addr, URL string

	path string
	port int
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts a redis-server for t and stops it when t ends. It skips t if
// redis-server is not in PATH.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := Launch()
	if errors.Is(err, ErrNotInstalled) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return s
}

// Launch starts a redis-server; Kill stops it.
func Launch() (*Server, error) {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNotInstalled
	}
	s := &Server{path: path}
	for attempt := 0; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		if err = s.start(); err == nil {
			break
		}
		if attempt == 4 {
			return nil, fmt.Errorf("starting redis-server: %w", err)
		}
	}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	s.URL = "redis://" + s.Addr
	return s, nil
}

// freePort returns a loopback port nothing listens on now. Another process
// may take it before redis-server does; Launch then tries another.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs redis-server on s.port and waits until it accepts connections.
func (s *Server) start() error {
	cmd := exec.Command(s.path, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if log.Len() < 4096 {
				log.WriteString(sc.Text() + "\n")
			}
		}
		_ = cmd.Wait()
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)), 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server exited: %s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server did not listen within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	return nil
}

// Kill stops the server at once, as a crash would. It is safe to call
// more than once.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart starts the server again on the same address, empty, as a Redis
// without persistence comes back after a crash.
func (s *Server) Restart(ctx context.Context) error {
	s.Kill()
	err := ctx.Err()
	for ctx.Err() == nil {
		// The port may still be held briefly by the old process's sockets.
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("restarting redis-server on %s: %w", s.Addr, err)
}
