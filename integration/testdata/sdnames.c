/* A served app that reads its sockets the way C services do, through
 * libsystemd: sd_listen_fds_with_names(), which refuses LISTEN_FDNAMES
 * unless every name is one systemd accepts, and sd_notify(). Each
 * connection on the first socket is answered with the names, one line:
 * "NAME0 NAME1 ... PID". SIGTERM stops it (exit 0) after STOPPING=1. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

static volatile sig_atomic_t stop;

static void on_term(int sig) { (void)sig; stop = 1; }

int main(void) {
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names);
	if (n < 1) {
		fprintf(stderr, "sdnames: sd_listen_fds_with_names: %s\n", n < 0 ? strerror(-n) : "no sockets");
		return 3;
	}
	char reply[4096];
	size_t len = 0;
	for (int i = 0; i < n; i++)
		len += snprintf(reply + len, sizeof reply - len, "%s ", names[i]);
	len += snprintf(reply + len, sizeof reply - len, "%d\n", (int)getpid());

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_term; /* no SA_RESTART: accept() returns EINTR */
	sigaction(SIGTERM, &sa, NULL);
	/* The listener is shared with the next copy: a copy that lost the
	 * race for a connection must still see SIGTERM soon. */
	struct timeval tv = {0, 100000};
	setsockopt(SD_LISTEN_FDS_START, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

	sd_notify(0, "READY=1");
	while (!stop) {
		int c = accept(SD_LISTEN_FDS_START, NULL, NULL);
		if (c < 0)
			continue;
		if (write(c, reply, len) < 0) { /* the client went: nothing to do */ }
		close(c);
	}
	sd_notify(0, "STOPPING=1");
	return 0;
}
