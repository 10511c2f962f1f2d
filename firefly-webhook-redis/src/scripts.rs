//! The Lua scripts: each store call is one of them, so each call is one round trip.

use deadpool_redis::redis::aio::ConnectionLike;
use deadpool_redis::redis::{
    self, Cmd, ErrorKind, FromRedisValue, RedisResult, ServerErrorKind, ToRedisArgs,
};

/// KEYS: processing, processed. ARGV: token, lock TTL ms.
/// Returns `{2}` completed, `{1}` acquired, `{0, pttl}` in progress.
const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return {2} end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1} end
return {0, redis.call('PTTL', KEYS[1])}
";

/// KEYS: processing. ARGV: token, lock TTL ms. Returns 1, or 0 when fenced (the lock expired
/// or another token holds it).
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// KEYS: processing, processed. ARGV: token, processed TTL ms. Returns 1, or 0 when fenced.
const COMPLETE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
redis.call('DEL', KEYS[1])
return 1
";

/// KEYS: processing. ARGV: token. Returns 1, or 0 when fenced.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

/// KEYS: failures (a hash). ARGV: error, TTL ms. Returns the count.
const RECORD_FAILURE: &str = r"
local n = redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('HSET', KEYS[1], 'last_error', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
";

/// A Lua script sent as `EVALSHA`, falling back to `EVAL` when the server answers `NOSCRIPT`.
///
/// `redis::Script::invoke_async` answers `NOSCRIPT` with `SCRIPT LOAD` and a second `EVALSHA`
/// (three round trips); `EVAL` does the same work in one and also caches the script, so the
/// next `EVALSHA` hits. A miss happens once per server (after a restart or `SCRIPT FLUSH`).
pub(crate) struct Lua {
    source: &'static str,
    sha1: String,
}

impl Lua {
    fn new(source: &'static str) -> Self {
        Self {
            source,
            sha1: redis::Script::new(source).get_hash().to_owned(),
        }
    }

    pub(crate) async fn run<C, K, A, T>(&self, mut conn: C, keys: &[K], args: A) -> RedisResult<T>
    where
        C: ConnectionLike + Send,
        K: ToRedisArgs,
        A: ToRedisArgs,
        T: FromRedisValue,
    {
        let build = |verb: &str, body: &str| {
            let mut cmd = Cmd::new();
            cmd.arg(verb).arg(body).arg(keys.len()).arg(keys).arg(&args);
            cmd
        };
        match build("EVALSHA", &self.sha1).query_async(&mut conn).await {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                build("EVAL", self.source).query_async(&mut conn).await
            }
            other => other,
        }
    }
}

/// All scripts, hashed once per store.
pub(crate) struct Scripts {
    pub(crate) claim: Lua,
    pub(crate) renew: Lua,
    pub(crate) complete: Lua,
    pub(crate) release: Lua,
    pub(crate) record_failure: Lua,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            claim: Lua::new(CLAIM),
            renew: Lua::new(RENEW),
            complete: Lua::new(COMPLETE),
            release: Lua::new(RELEASE),
            record_failure: Lua::new(RECORD_FAILURE),
        }
    }
}
