/* A served app that, like nginx, switches its inherited listener (fd 3) to
 * non-blocking mode itself (ioctl FIONBIO), then waits for its stop
 * signal. O_NONBLOCK lives on the open file description that every copy
 * and generation shares, so the tests can see whether anyone changes it.
 * With a path argument only the first copy does so: it creates the file,
 * and a copy that finds it leaves the mode alone. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc > 1 && open(argv[1], O_CREAT | O_EXCL | O_WRONLY, 0644) < 0)
		goto wait; /* a later copy */
	int on = 1;
	if (ioctl(3, FIONBIO, &on) < 0) {
		perror("nbapp: FIONBIO");
		return 1;
	}
wait:
	for (;;)
		pause();
}
