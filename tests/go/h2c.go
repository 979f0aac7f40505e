// The h2c part of the Go test proxy (see reverse_proxy.go): HTTP/2 over
// cleartext on the client side, from golang.org/x/net/http2/h2c (Debian's
// golang-golang-x-net-dev, built in GOPATH mode from /usr/share/gocode).

package main

import (
	"net/http"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

func init() {
	serveH2C = func(h http.Handler) http.Handler { return h2c.NewHandler(h, &http2.Server{}) }
}
