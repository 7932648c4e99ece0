// Command apiserver runs a real, unmodified kube-apiserver (k8s.io/kubernetes) on
// loopback for the router's tests: an embedded single-member etcd, a fresh
// self-signed CA and serving certificate, a static token (test-token → admin in
// system:masters), AlwaysAllow authorization, service-account keys made at start,
// and no controllers (so no ServiceAccount admission, which would refuse pods
// without a token controller).
//
// When /readyz answers 200 it writes a kubeconfig to -kubeconfig, prints
// "READY https://127.0.0.1:PORT" on stdout and serves until SIGTERM or SIGINT (or,
// with -exit-with-stdin, until its stdin closes, e.g. because the test that
// started it died); then it stops the API server and etcd and removes its
// temporary directory.
//
// This is test infrastructure only: the router itself has no Go.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"golang.org/x/sys/unix"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

// Token is the bearer token of the only user, admin (group system:masters).
const Token = "test-token"

func main() {
	kubeconfig := flag.String("kubeconfig", "", "where to write the kubeconfig once ready (required)")
	logFile := flag.String("log-file", "", "send etcd's and the API server's logs (stderr) to this file instead")
	exitWithStdin := flag.Bool("exit-with-stdin", false, "shut down when stdin reaches end of file")
	startupTimeout := flag.Duration("startup-timeout", 3*time.Minute, "give up when not ready after this long")
	stopTimeout := flag.Duration("stop-timeout", 30*time.Second, "exit anyway this long after the stop signal")
	flag.Parse()
	if *kubeconfig == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: apiserver -kubeconfig PATH [-log-file PATH] [-exit-with-stdin]")
		os.Exit(2)
	}
	if *logFile != "" {
		f, err := os.OpenFile(*logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "apiserver:", err)
			os.Exit(2)
		}
		// Everything (klog, etcd's zap, panics) writes to fd 2.
		if err := unix.Dup2(int(f.Fd()), 2); err != nil {
			fmt.Fprintln(os.Stderr, "apiserver:", err)
			os.Exit(2)
		}
	}
	tmp, err := os.MkdirTemp("", "rkllama-test-apiserver-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "apiserver:", err)
		os.Exit(1)
	}
	code := 0
	if err := run(tmp, *kubeconfig, *exitWithStdin, *startupTimeout, *stopTimeout); err != nil {
		fmt.Fprintln(os.Stderr, "apiserver:", err)
		code = 1
	}
	if err := os.RemoveAll(tmp); err != nil {
		fmt.Fprintln(os.Stderr, "apiserver: removing temp dir:", err)
	}
	os.Exit(code)
}

func run(tmp, kubeconfigPath string, exitWithStdin bool, startupTimeout, stopTimeout time.Duration) error {
	// Sets up the handler of SIGTERM/SIGINT (first: cancel ctx; second: exit 1).
	cmd := app.NewAPIServerCommand()
	ctx := cmd.Context()
	if exitWithStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			if ctx.Err() == nil { // not after a signal: a second one exits at once with 1
				genericapiserver.RequestShutdown()
			}
		}()
	}
	// A shutdown that hangs (a watch the API server waits for) must not hang the test.
	stopping := make(chan os.Signal, 1)
	signal.Notify(stopping, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case <-stopping:
		case <-ctx.Done():
		}
		time.Sleep(stopTimeout)
		fmt.Fprintf(os.Stderr, "apiserver: not stopped %s after the signal; exiting anyway\n", stopTimeout)
		_ = os.RemoveAll(tmp)
		os.Exit(1)
	}()

	files, caPEM, err := writeCredentials(tmp)
	if err != nil {
		return err
	}

	etcd, err := startEtcd(ctx, filepath.Join(tmp, "etcd"))
	if err != nil {
		return err
	}
	defer func() {
		etcd.Close()
	}()
	etcdURL := "http://" + etcd.Clients[0].Addr().String()

	port, err := freePort()
	if err != nil {
		return err
	}
	cmd.SetArgs([]string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Join(tmp, "certs"),
		"--tls-cert-file=" + files.servingCert,
		"--tls-private-key-file=" + files.servingKey,
		"--token-auth-file=" + files.tokens,
		"--anonymous-auth=false",
		"--authorization-mode=AlwaysAllow",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + files.saKey,
		"--service-account-signing-key-file=" + files.saKey,
		"--service-cluster-ip-range=10.96.0.0/24",
		// No controller-manager runs, so no token controller creates the default
		// ServiceAccount that this admission plugin insists on for every pod.
		"--disable-admission-plugins=ServiceAccount",
		// The kubernetes Service's endpoints may not be a loopback address.
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	})
	served := make(chan error, 1)
	go func() { served <- cmd.Execute() }()

	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	if err := waitReady(ctx, base, caPEM, served, etcd.Err(), startupTimeout); err != nil {
		return err
	}
	if err := writeKubeconfig(kubeconfigPath, base, caPEM); err != nil {
		return err
	}
	fmt.Printf("READY %s\n", base)
	_ = os.Stdout.Sync()

	select {
	case err := <-served:
		if err != nil {
			return fmt.Errorf("kube-apiserver: %w", err)
		}
		return nil
	case err := <-etcd.Err():
		return fmt.Errorf("etcd: %w", err)
	}
}

type credentialFiles struct {
	servingCert, servingKey, saKey, tokens string
}

// writeCredentials makes a CA, a serving certificate for 127.0.0.1 and localhost
// signed by it (rustls, under Deno, refuses a CA certificate as a server's), a
// service-account key and the token file.
func writeCredentials(dir string) (credentialFiles, []byte, error) {
	files := credentialFiles{
		servingCert: filepath.Join(dir, "serving.crt"),
		servingKey:  filepath.Join(dir, "serving.key"),
		saKey:       filepath.Join(dir, "service-account.key"),
		tokens:      filepath.Join(dir, "tokens.csv"),
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return files, nil, err
	}
	now := time.Now()
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "rkllama-router test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return files, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return files, nil, err
	}
	serverKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return files, nil, err
	}
	serverTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost", "kubernetes.default.svc"},
	}
	serverDER, err := x509.CreateCertificate(rand.Reader, serverTemplate, ca, &serverKey.PublicKey, caKey)
	if err != nil {
		return files, nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return files, nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	writes := []struct {
		path string
		data []byte
	}{
		{files.servingCert, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: serverDER}), caPEM...)},
		{files.servingKey, ecKeyPEM(serverKey)},
		{files.saKey, ecKeyPEM(saKey)},
		{files.tokens, []byte(Token + `,admin,admin-uid,"system:masters"` + "\n")},
	}
	for _, w := range writes {
		if err := os.WriteFile(w.path, w.data, 0o600); err != nil {
			return files, nil, err
		}
	}
	return files, caPEM, nil
}

func ecKeyPEM(key *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// startEtcd starts a single-member etcd on loopback ports chosen by the kernel.
func startEtcd(ctx context.Context, dir string) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.Dir = dir
	loopback := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls = []url.URL{loopback}
	cfg.ListenPeerUrls = []url.URL{loopback}
	cfg.LogLevel = "error"
	// Throwaway data: durability buys nothing and fsync costs seconds on slow disks.
	cfg.UnsafeNoFsync = true
	cfg.QuotaBackendBytes = 256 << 20
	cfg.SnapshotCount = 5000
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting etcd: %w", err)
	}
	select {
	case <-etcd.Server.ReadyNotify():
		return etcd, nil
	case err := <-etcd.Err():
		etcd.Close()
		return nil, fmt.Errorf("etcd: %w", err)
	case <-time.After(time.Minute):
		etcd.Close()
		return nil, errors.New("etcd not ready after a minute")
	case <-ctx.Done():
		etcd.Close()
		return nil, errors.New("stopped before etcd was ready")
	}
}

// freePort asks the kernel for a free loopback port (the API server binds it
// a moment later: a race only with other processes taking ports at random).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls /readyz until it answers 200.
func waitReady(ctx context.Context, base string, caPEM []byte, served <-chan error, etcdErr <-chan error, timeout time.Duration) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	defer client.CloseIdleConnections()
	deadline := time.After(timeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	last := "no answer yet"
	for {
		select {
		case err := <-served:
			if err == nil {
				err = errors.New("exited")
			}
			return fmt.Errorf("kube-apiserver before ready: %w", err)
		case err := <-etcdErr:
			return fmt.Errorf("etcd: %w", err)
		case <-ctx.Done():
			return errors.New("stopped before the API server was ready")
		case <-deadline:
			return fmt.Errorf("API server not ready after %s: %s", timeout, last)
		case <-tick.C:
		}
		req, err := http.NewRequest(http.MethodGet, base+"/readyz", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+Token)
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
}

// writeKubeconfig writes the file whole (rename), so a reader never sees half of it.
func writeKubeconfig(path, server string, caPEM []byte) error {
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: test
  context:
    cluster: test
    user: admin
    namespace: default
current-context: test
`, server, base64.StdEncoding.EncodeToString(caPEM), Token)
	partial := path + ".partial"
	if err := os.WriteFile(partial, []byte(text), 0o600); err != nil {
		return err
	}
	return os.Rename(partial, path)
}
