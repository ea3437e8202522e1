"""The shards' Redis connections pack commands with hiredis (state/store.py): the bytes on the wire
must be exactly those redis-py's own Python packer sends, for every argument type the store uses."""

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import DataError

from rewardloop.state.store import HiredisPacking, hiredis_packed

ARGUMENTS = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=80),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=40).map(memoryview),
    st.binary(max_size=40).map(bytearray),
)
COMMAND = st.sampled_from(["EVALSHA", "XADD", b"HSET", "CONFIG GET", b"CLIENT SETNAME"])


@settings(max_examples=300, deadline=None)
@given(command=COMMAND, args=st.lists(ARGUMENTS, max_size=12))
def test_hiredis_packs_the_bytes_redis_py_packs(command, args):
    python, packed = aioredis.Connection(), hiredis_packed(aioredis.Connection)()
    assert b"".join(packed.pack_command(command, *args)) == b"".join(python.pack_command(command, *args))


def test_every_connection_class_of_a_url_gets_the_packer():
    for connection_class in (aioredis.Connection, aioredis.SSLConnection, aioredis.UnixDomainSocketConnection):
        packed = hiredis_packed(connection_class)
        assert issubclass(packed, HiredisPacking) and issubclass(packed, connection_class)
        assert hiredis_packed(connection_class) is packed  # one class per base, not one per pool


@pytest.mark.parametrize("bad", [True, None, object()])
def test_what_redis_py_refuses_is_refused_the_same_way(bad):
    with pytest.raises(DataError):
        aioredis.Connection().pack_command("SET", "k", bad)
    with pytest.raises(DataError):
        hiredis_packed(aioredis.Connection)().pack_command("SET", "k", bad)
