/* A static test app for the adoption engine (src/adopt/tests.rs compiles it with gcc -static:
 * no libc interposition could reach it). One line per step on stdout.
 *
 *   fixture tcp ADDR PORT [nonblock] [signal] [thread]
 *                                  bind ADDR:PORT (IPv4 or IPv6 by the ADDR's form),
 *                                  listen(5), serve HTTP forever; "signal" first installs an
 *                                  SA_RESTART SIGUSR1 handler; "thread" binds and listens from
 *                                  a second thread (not the thread group leader)
 *   fixture udp ADDR PORT          bind UDP, echo one datagram, exit
 *   fixture unix PATH              unlink PATH, bind it, listen(5), serve HTTP forever
 *   fixture bench-continue N       N x (socket, bind 127.0.0.1:0, close): ns per bind
 *   fixture bench-adopt ADDR PORT N   N x (socket, bind ADDR:PORT, close): ns per bind
 *   fixture bench-getpid N         N x getpid: ns per untrapped call
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t signals;
static void on_usr1(int sig) { (void)sig; signals++; }

static int make_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *len = sizeof *a4;
        return AF_INET;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *len = sizeof *a6;
        return AF_INET6;
    }
    fprintf(stderr, "bad address %s\n", host);
    exit(2);
}

static void serve(int fd, int nonblock) {
    char local[128], buf[1024];
    for (;;) {
        if (nonblock) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            poll(&p, 1, -1);
        }
        int c = accept(fd, NULL, NULL);
        if (c < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            printf("accept errno=%d\n", errno);
            exit(1);
        }
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        getsockname(c, (struct sockaddr *)&ss, &len);
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, local, sizeof local);
            snprintf(local + strlen(local), 16, ":%d", ntohs(a->sin_port));
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            local[0] = '[';
            inet_ntop(AF_INET6, &a->sin6_addr, local + 1, sizeof local - 1);
            snprintf(local + strlen(local), 16, "]:%d", ntohs(a->sin6_port));
        } else {
            strcpy(local, "unix");
        }
        int flags = fcntl(c, F_GETFL);
        if (flags & O_NONBLOCK) fcntl(c, F_SETFL, flags & ~O_NONBLOCK);
        (void)!read(c, buf, sizeof buf);
        int n = snprintf(buf, sizeof buf,
                         "HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nfixture pid=%d local=%s\n",
                         getpid(), local);
        (void)!write(c, buf, n);
        close(c);
    }
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

struct tcp_args {
    const char *host;
    int port, nonblock, fd;
};

/* socket, bind, listen; exits on failure. */
static void *tcp_listen(void *arg) {
    struct tcp_args *t = arg;
    struct sockaddr_storage ss;
    socklen_t len;
    int family = make_addr(t->host, t->port, &ss, &len);
    t->fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | (t->nonblock ? SOCK_NONBLOCK : 0), 0);
    if (bind(t->fd, (struct sockaddr *)&ss, len) < 0) {
        printf("bind errno=%d\n", errno);
        exit(1);
    }
    struct sockaddr_storage got;
    socklen_t glen = sizeof got;
    getsockname(t->fd, (struct sockaddr *)&got, &glen);
    int port = got.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&got)->sin_port)
                                         : ntohs(((struct sockaddr_in6 *)&got)->sin6_port);
    printf("bound fd=%d port=%d signals=%d\n", t->fd, port, (int)signals);
    if (listen(t->fd, 5) < 0) {
        printf("listen errno=%d\n", errno);
        exit(1);
    }
    printf("listening tid=%ld\n", (long)syscall(SYS_gettid));
    return NULL;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) return 2;
    const char *mode = argv[1];
    if (!strcmp(mode, "tcp") && argc >= 4) {
        struct tcp_args t = {.host = argv[2], .port = atoi(argv[3])};
        int threaded = 0;
        for (int i = 4; i < argc; i++) {
            if (!strcmp(argv[i], "nonblock")) t.nonblock = 1;
            if (!strcmp(argv[i], "thread")) threaded = 1;
            if (!strcmp(argv[i], "signal")) {
                struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
                sigaction(SIGUSR1, &sa, NULL);
            }
        }
        if (threaded) {
            pthread_t thread;
            pthread_create(&thread, NULL, tcp_listen, &t);
            pthread_join(thread, NULL);
        } else {
            tcp_listen(&t);
        }
        serve(t.fd, t.nonblock);
    } else if (!strcmp(mode, "udp") && argc == 4) {
        struct sockaddr_storage ss;
        socklen_t len;
        int family = make_addr(argv[2], atoi(argv[3]), &ss, &len);
        int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
            printf("bind errno=%d\n", errno);
            return 1;
        }
        printf("bound fd=%d\n", fd);
        char buf[512];
        struct sockaddr_storage from;
        socklen_t flen = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
        sendto(fd, buf, n, 0, (struct sockaddr *)&from, flen);
        printf("echoed %zd\n", n);
    } else if (!strcmp(mode, "unix") && argc == 3) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        strncpy(a.sun_path, argv[2], sizeof a.sun_path - 1);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int rc = unlink(argv[2]);
        printf("unlink rc=%d errno=%d\n", rc, rc < 0 ? errno : 0);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            printf("bind errno=%d\n", errno);
            return 1;
        }
        printf("bound fd=%d\n", fd);
        if (listen(fd, 5) < 0) {
            printf("listen errno=%d\n", errno);
            return 1;
        }
        printf("listening\n");
        serve(fd, 0);
    } else if (!strcmp(mode, "bench-continue") && argc == 3) {
        int n = atoi(argv[2]);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        long long spent = 0;
        for (int i = 0; i < n; i++) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            long long t = now_ns();
            if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) return 1;
            spent += now_ns() - t;
            close(fd);
        }
        printf("ns_per_call=%lld\n", spent / n);
    } else if (!strcmp(mode, "bench-adopt") && argc == 5) {
        struct sockaddr_storage ss;
        socklen_t len;
        int family = make_addr(argv[2], atoi(argv[3]), &ss, &len);
        int n = atoi(argv[4]);
        long long spent = 0;
        for (int i = 0; i < n; i++) {
            int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
            long long t = now_ns();
            if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
                printf("bind errno=%d\n", errno);
                return 1;
            }
            spent += now_ns() - t;
            close(fd);
        }
        printf("ns_per_call=%lld\n", spent / n);
    } else if (!strcmp(mode, "bench-getpid") && argc == 3) {
        int n = atoi(argv[2]);
        long long t = now_ns();
        for (int i = 0; i < n; i++) syscall(SYS_getpid);
        printf("ns_per_call=%lld\n", (now_ns() - t) / n);
    } else {
        fprintf(stderr, "usage: see fixture.c\n");
        return 2;
    }
    return 0;
}
