/* fdapp: a served app that writes its open descriptors (and for sockets,
 * their local port) to argv[1], then waits for a signal. C, so no runtime
 * opens descriptors of its own. */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2) return 2;
	FILE *out = fopen(argv[1], "w");
	if (!out) return 1;
	int outfd = fileno(out);
	DIR *d = opendir("/proc/self/fd");
	int self = dirfd(d);
	int fds[256], n = 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < 256) {
		if (e->d_name[0] == '.') continue;
		int fd = atoi(e->d_name);
		if (fd != self && fd != outfd) fds[n++] = fd;
	}
	closedir(d);
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (fds[j] < fds[i]) { int t = fds[i]; fds[i] = fds[j]; fds[j] = t; }
	for (int i = 0; i < n; i++) {
		struct sockaddr_in6 sa; socklen_t len = sizeof sa;
		int port = -1, listening = 0; socklen_t l2 = sizeof listening;
		if (getsockname(fds[i], (struct sockaddr *)&sa, &len) == 0 && (sa.sin6_family == AF_INET || sa.sin6_family == AF_INET6)) {
			port = ntohs(sa.sin6_port);
			getsockopt(fds[i], SOL_SOCKET, SO_ACCEPTCONN, &listening, &l2);
		}
		fprintf(out, "fd=%d port=%d listening=%d\n", fds[i], port, listening);
	}
	fprintf(out, "end\n");
	fclose(out);
	pause();
	return 0;
}
