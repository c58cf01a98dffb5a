/* refserver: the minimal inetd-style reference the spawn benchmark compares
 * sockhold against. accept -> posix_spawn with the connection as fd 0 and 1
 * -> reap. No limits, no logging, no environment: the cost floor.
 * Usage: refserver PORT HANDLER [ARG...]; prints "listening PORT" when ready. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
	if (argc < 3) { fprintf(stderr, "usage: refserver PORT HANDLER [ARG...]\n"); return 2; }
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4096)) { perror("bind/listen"); return 1; }
	socklen_t alen = sizeof a;
	getsockname(l, (struct sockaddr *)&a, &alen);
	printf("listening %d\n", ntohs(a.sin_port));
	fflush(stdout);
	for (;;) {
		int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) continue;
		posix_spawn_file_actions_t fa;
		posix_spawn_file_actions_init(&fa);
		posix_spawn_file_actions_adddup2(&fa, c, 0);
		posix_spawn_file_actions_adddup2(&fa, c, 1);
		pid_t pid;
		if (posix_spawn(&pid, argv[2], &fa, NULL, argv + 2, environ) != 0) perror("posix_spawn");
		posix_spawn_file_actions_destroy(&fa);
		close(c);
		while (waitpid(-1, NULL, WNOHANG) > 0) {}
	}
}
