import os
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("uwsgi %d\n" % os.getpid()).encode()]
