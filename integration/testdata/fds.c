/* fds: list this process's open descriptors, one line each:
 *   fd=N target=LINK nonblock=true|false
 * Written in C so that no language runtime opens descriptors of its own. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(void) {
	DIR *d = opendir("/proc/self/fd");
	if (!d) { perror("opendir"); return 1; }
	int self = dirfd(d);
	int fds[1024], n = 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < 1024) {
		if (e->d_name[0] == '.') continue;
		int fd = atoi(e->d_name);
		if (fd != self) fds[n++] = fd;
	}
	closedir(d);
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (fds[j] < fds[i]) { int t = fds[i]; fds[i] = fds[j]; fds[j] = t; }
	char path[64], target[512];
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof path, "/proc/self/fd/%d", fds[i]);
		ssize_t len = readlink(path, target, sizeof target - 1);
		target[len < 0 ? 0 : len] = 0;
		int fl = fcntl(fds[i], F_GETFL);
		printf("fd=%d target=%s nonblock=%s\n", fds[i], target, (fl & O_NONBLOCK) ? "true" : "false");
	}
	return 0;
}
