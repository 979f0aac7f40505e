/* A client with OpenSSL linked into its own executable (as Node.js ships
 * it): after a line on stdin it sends COUNT keep-alive requests over one
 * TLS connection to HOST:PORT, reads each response by its Content-Length,
 * and prints "done REQUESTS" on stdout. Built by the end-to-end tests with
 * Debian's libssl.a and libcrypto.a. Certificates are not verified: the
 * server is the tests' own, with a self-signed certificate. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int read_response(SSL *ssl) {
    char buf[65536];
    size_t have = 0;
    char *end = NULL;
    while (end == NULL) {
        int n = SSL_read(ssl, buf + have, (int)(sizeof buf - 1 - have));
        if (n <= 0) return -1;
        have += (size_t)n;
        buf[have] = 0;
        end = strstr(buf, "\r\n\r\n");
        if (end == NULL && have >= sizeof buf - 1) return -1;
    }
    const char *cl = strcasestr(buf, "content-length:");
    if (cl == NULL || cl > end) return -1;
    long body = strtol(cl + strlen("content-length:"), NULL, 10);
    long got = (long)(have - (size_t)(end + 4 - buf));
    while (got < body) {
        int n = SSL_read(ssl, buf, (int)sizeof buf);
        if (n <= 0) return -1;
        got += n;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s HOST PORT COUNT PATH\n", argv[0]);
        return 2;
    }
    int count = atoi(argv[3]);
    char line[64];
    if (fgets(line, sizeof line, stdin) == NULL) return 2;

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("connect");
        return 1;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        fprintf(stderr, "TLS handshake failed\n");
        return 1;
    }
    const char *body = "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    int done = 0;
    for (int i = 0; i < count; i++) {
        char req[1024];
        int len = snprintf(req, sizeof req,
                           "POST %s HTTP/1.1\r\nhost: api.openai.com\r\ncontent-type: application/json\r\n"
                           "authorization: Bearer sk-test-canary\r\ncontent-length: %zu\r\n\r\n%s",
                           argv[4], strlen(body), body);
        if (SSL_write(ssl, req, len) != len || read_response(ssl) != 0) break;
        done++;
    }
    printf("done %d\n", done);
    fflush(stdout);
    SSL_shutdown(ssl);
    close(fd);
    return done == count ? 0 : 1;
}
