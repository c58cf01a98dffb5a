run lambda { |env| [200, {"Content-Type" => "text/plain"}, ["puma #{Process.pid}\n"]] }
