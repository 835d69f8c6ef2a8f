-- Requests cycle through the paths listed in a file (one per line, given after `--`), each thread from its
-- own place in the list, so one run asks for many different tiles, as a map view does. The summary line
-- comes from done.lua (its path in WRK_DONE_SCRIPT), as for single-URL runs.
dofile(os.getenv("WRK_DONE_SCRIPT"))

local paths, position, created = {}, 0, 0

function setup(thread)
  thread:set("offset", created)
  created = created + 1
end

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  position = (offset * math.floor(#paths / 2 + 1)) % #paths
end

function request()
  position = position % #paths + 1
  return wrk.format(nil, paths[position])
end
