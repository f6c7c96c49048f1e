"""Lua shared by the project's Redis scripts.

REFUSED defines refused(reply): for the error reply of a script's first write (done with
redis.pcall), that error as Redis gave it, else nil. A full Redis (maxmemory under the
noeviction policy) refuses a script's first write; inside a script the error reads
"@user_script: 2: -OOM command not allowed ...", which redis-py takes for a plain
ResponseError. Returned as "OOM command not allowed ..." it is an OutOfMemoryError, which the
worker processes ride out (worker.app.ride_out_outages). Nothing was written before it.
"""

REFUSED = """
local function refused(reply)
  if type(reply) == 'table' and reply.err then
    local at = string.find(reply.err, 'OOM ', 1, true)
    return redis.error_reply(at and string.sub(reply.err, at) or reply.err)
  end
  return nil
end
"""
