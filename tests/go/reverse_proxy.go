// Command reverse_proxy is the Go test proxy of the end-to-end tests: an
// HTTP/1.1 reverse proxy made only of Go's standard library
// (net/http/httputil.ReverseProxy). Built with CGO_ENABLED=0 it is a static
// binary that does its socket I/O through the Go runtime's own system calls,
// without libc.
//
//	reverse_proxy -listen 127.0.0.1:8080 -route /openai/=127.0.0.1:9001 ...
//
// A request under a route's prefix goes to that upstream with the prefix
// removed (/openai/v1/chat/completions -> /v1/chat/completions), and the
// upstream's path, if any, put before it. An upstream written
// https://HOST:PORT is reached over TLS by Go's crypto/tls with HTTP/1.1,
// h2://HOST:PORT with HTTP/2 over TLS (ALPN h2); the test certificates are
// self-signed, so they are not verified. Client and
// upstream connections are kept alive; responses are flushed to the client
// as each write arrives from the upstream, so streams stay streams.
//
// A request body is read to its end once (bodyReadOnce): see there why.
//
// Built together with h2c.go (golang.org/x/net/http2/h2c from Debian's
// golang-golang-x-net-dev), -h2c serves the client side as HTTP/2 over
// cleartext too (prior knowledge and HTTP/1.1 upgrade), besides HTTP/1.1.
package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
)

// serveH2C wraps a handler to serve h2c as well; set by h2c.go, nil when
// the proxy is built from this file alone (standard library only).
var serveH2C func(http.Handler) http.Handler

func main() {
	listen := "127.0.0.1:8080"
	h2c := false
	mux := http.NewServeMux()
	args := os.Args[1:]
	for i := 0; i < len(args); i += 2 {
		if args[i] == "-h2c" || args[i] == "--h2c" {
			h2c = true
			i--
			continue
		}
		if i+1 >= len(args) {
			log.Fatalf("%s needs a value", args[i])
		}
		switch args[i] {
		case "-listen", "--listen":
			listen = args[i+1]
		case "-route", "--route":
			prefix, upstream, ok := strings.Cut(args[i+1], "=")
			if !ok || !strings.HasPrefix(prefix, "/") || !strings.HasSuffix(prefix, "/") {
				log.Fatalf("route %q: use /PREFIX/=HOST:PORT", args[i+1])
			}
			mux.Handle(prefix, http.StripPrefix(strings.TrimSuffix(prefix, "/"), proxyTo(upstream)))
		default:
			log.Fatalf("unknown argument %q: use -listen ADDR and -route /PREFIX/=HOST:PORT", args[i])
		}
	}
	var handler http.Handler = mux
	if h2c {
		if serveH2C == nil {
			log.Fatalf("-h2c: this proxy was built without h2c.go: build reverse_proxy.go h2c.go")
		}
		handler = serveH2C(mux)
	}
	server := &http.Server{Addr: listen, Handler: handler}
	fmt.Fprintf(os.Stderr, "reverse_proxy listening on %s\n", listen)
	log.Fatal(server.ListenAndServe())
}

// proxyTo relays requests to one upstream unchanged: no proxy from the
// environment, no compression the client did not ask for, and every write
// flushed at once.
func proxyTo(upstream string) http.Handler {
	target := &url.URL{Scheme: "http", Host: upstream}
	if strings.Contains(upstream, "://") {
		u, err := url.Parse(upstream)
		if err != nil {
			log.Fatalf("upstream %q: %v", upstream, err)
		}
		target = u
	}
	transport := &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 8}
	switch target.Scheme {
	case "http":
	case "https", "h2":
		transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		if target.Scheme == "h2" {
			// HTTP/2 over TLS (ALPN h2), which a custom TLS config
			// otherwise turns off.
			transport.ForceAttemptHTTP2 = true
			target.Scheme = "https"
		}
	default:
		log.Fatalf("upstream %q: use HOST:PORT, https://HOST:PORT[/PATH] or h2://HOST:PORT[/PATH]", upstream)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = transport
	proxy.FlushInterval = -1
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			r = r.WithContext(r.Context())
			r.Body = &bodyReadOnce{ReadCloser: r.Body}
		}
		proxy.ServeHTTP(w, r)
	})
}

// bodyReadOnce answers io.EOF by itself once the request body it wraps has
// said io.EOF, without reading that body again.
//
// Why: after copying a request body of known length upstream, Go's
// transport reads it once more (checking it is not longer than declared)
// before closing it. Go's HTTP/1 server consumes and closes an unread
// request body as soon as the handler's response starts (golang/go#15527),
// and a read after that close fails ("invalid Read on closed Body"); the
// transport's writeLoop then closes the upstream connection, cutting the
// response being streamed from it ("use of closed network connection" in
// ReverseProxy's log, an unexpected EOF for the client; golang/go#40747).
// It takes a writeLoop goroutine descheduled for a few milliseconds
// between its body write and that extra read while the upstream answers:
// a loaded machine. Same bytes on the wire either way.
type bodyReadOnce struct {
	io.ReadCloser
	sawEOF bool
}

func (b *bodyReadOnce) Read(p []byte) (int, error) {
	if b.sawEOF {
		return 0, io.EOF
	}
	n, err := b.ReadCloser.Read(p)
	b.sawEOF = err == io.EOF
	return n, err
}
