"""API keys against a real MongoDB-wire server: the key format, hashing at rest, one round trip
per verification (none for a malformed key), revocation, scopes, and `leadflow keys`.

The module starts its own nx-27017 (about a second) instead of the session's whole stack.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterator

import pytest
from pymongo import MongoClient
from pymongo.database import Database
from typer.testing import CliRunner

from api.keys import KEY_PATTERN, ApiKeys, Scope, parse_scopes
from connectors.mongo import CommandCounter
from leadflow.cli import app
from tests.conftest import leadflow_env
from tests.servers import embedded_mongo


@pytest.fixture(scope="module")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with embedded_mongo(tmp_path_factory.mktemp("keys-mongo")) as url:
        yield url


@pytest.fixture(scope="module")
def counter() -> CommandCounter:
    return CommandCounter()


@pytest.fixture(scope="module")
def client(mongo_url: str, counter: CommandCounter) -> Iterator[MongoClient]:
    mongo: MongoClient = MongoClient(mongo_url, tz_aware=True, event_listeners=[counter])
    yield mongo
    mongo.close()


@pytest.fixture
def db(client: MongoClient) -> Iterator[Database]:
    name = f"t_keys_{uuid.uuid4().hex[:8]}"
    yield client[name]
    client.drop_database(name)


@pytest.fixture
def keys(db: Database) -> Iterator[ApiKeys]:
    store = ApiKeys(db, last_used_every=3600)
    yield store
    store.close()


def test_a_created_key_verifies_with_its_name_and_scopes(keys: ApiKeys) -> None:
    record, key = keys.create("crm-sync", "runs:write, leads:read")
    match = KEY_PATTERN.fullmatch(key)
    assert match is not None and match.group(1) == record.key_id
    verified = keys.verify(key)
    assert verified is not None
    assert (verified.key_id, verified.name) == (record.key_id, "crm-sync")
    assert verified.scopes == {Scope.RUNS_WRITE, Scope.LEADS_READ}
    assert verified.allows(Scope.RUNS_WRITE) and not verified.allows(Scope.EXPORT_READ)
    assert not verified.revoked and not verified.ratelimit_exempt
    other_record, other_key = keys.create("second")
    assert other_record.key_id != record.key_id and other_key != key
    assert other_record.scopes == {Scope.RUNS_READ, Scope.LEADS_READ}  # the read-only default


def test_only_a_salted_keyed_hash_of_the_key_is_stored(keys: ApiKeys, db: Database) -> None:
    record, key = keys.create("a", ["leads:read"])
    _, other_key = keys.create("b", ["leads:read"])
    secret = key.split("_", 2)[2]
    docs = {doc["_id"]: doc for doc in db["api_keys"].find()}
    doc = docs[record.key_id]
    for stored in docs.values():
        assert secret not in repr(stored) and key not in repr(stored)
    assert doc["hash"] == hmac.new(bytes.fromhex(doc["salt"]), key.encode(), "sha256").hexdigest()
    assert doc["hash"] != hashlib.sha256(key.encode()).hexdigest()
    assert len({d["salt"] for d in docs.values()}) == 2
    assert all(not hasattr(r, "hash") and not hasattr(r, "salt") for r in keys.list())
    assert other_key not in repr(keys.list())


def test_a_malformed_key_is_refused_without_asking_mongodb(
    keys: ApiKeys, counter: CommandCounter
) -> None:
    _, key = keys.create("a", ["leads:read"])
    key_id, secret = key.split("_", 2)[1:]
    malformed = [
        "",
        "lf_",
        "lf_abc_def",
        f"Bearer {key}",
        f" {key}",
        f"{key}\n",
        key + "A",
        key[:-1],
        key.upper(),
        f"xx_{key_id}_{secret}",
        f"lf_{key_id}{secret}",
        f"lf_{key_id[:-1]}g_{secret}",
        f"lf_{key_id}_{secret[:-1]}é",
    ]
    counter.reset()
    assert [keys.verify(bad) for bad in malformed] == [None] * len(malformed)
    assert counter.round_trips == 0


def test_a_wrong_secret_under_a_real_key_id_is_refused_in_one_round_trip(
    keys: ApiKeys, counter: CommandCounter
) -> None:
    _, key = keys.create("a", ["admin"])
    _, other = keys.create("b", ["admin"])
    prefix, key_id, secret = key.split("_", 2)
    flipped = ("B" if secret[0] == "A" else "A") + secret[1:]
    counter.reset()
    assert keys.verify(f"{prefix}_{key_id}_{flipped}") is None
    # Another key's (valid) secret under this key's id.
    assert keys.verify(f"{prefix}_{key_id}_{other.split('_', 2)[2]}") is None
    # A well-formed id that does not exist.
    assert keys.verify(f"{prefix}_{'0' * 12}_{secret}") is None
    assert counter.commands == {"find": 3}


def test_verify_is_one_find_and_last_used_is_written_in_the_background_at_most_once(
    db: Database, counter: CommandCounter
) -> None:
    throttled = ApiKeys(db, last_used_every=3600)
    record, key = throttled.create("a", ["leads:read"])
    assert throttled.list()[0].last_used is None
    counter.reset()
    for _ in range(5):
        assert throttled.verify(key) is not None
    throttled.close()  # waits for the background write
    assert counter.commands == {"find": 5, "update": 1}
    last_used = throttled.list()[0].last_used
    assert last_used is not None and last_used >= record.created_at.replace(microsecond=0)

    every_time = ApiKeys(db, last_used_every=0)
    counter.reset()
    for _ in range(3):
        assert every_time.verify(key) is not None
    every_time.close()
    assert counter.commands == {"find": 3, "update": 3}


def test_a_revoked_key_no_longer_verifies(keys: ApiKeys) -> None:
    record, key = keys.create("leaver", ["runs:read"])
    _, kept = keys.create("stayer", ["runs:read"])
    revoked = keys.revoke(record.key_id)
    assert revoked is not None and revoked.revoked and revoked.revoked_at is not None
    assert keys.verify(key) is None
    assert keys.verify(kept) is not None
    again = keys.revoke(record.key_id)
    assert again is not None and again.revoked_at == revoked.revoked_at  # the first time stays
    assert keys.revoke("0" * 12) is None
    listed = {r.name: r for r in keys.list()}
    assert listed["leaver"].revoked and not listed["stayer"].revoked


def test_ratelimit_exempt_is_granted_only_with_the_flag(keys: ApiKeys) -> None:
    for scopes in (["ratelimit:exempt"], "admin,ratelimit:exempt"):
        with pytest.raises(ValueError, match="only be granted from the command line"):
            keys.create("load-test", scopes)
    assert keys.list() == []
    _, key = keys.create("load-test", ["ratelimit:exempt", "leads:read"], allow_exempt=True)
    verified = keys.verify(key)
    assert verified is not None and verified.ratelimit_exempt
    admin, _ = keys.create("ops", ["admin"])
    assert all(admin.allows(scope) for scope in Scope if scope is not Scope.RATELIMIT_EXEMPT)
    assert not admin.allows(Scope.RATELIMIT_EXEMPT) and not admin.ratelimit_exempt


def test_unknown_or_missing_scopes_and_names_are_clear_errors(keys: ApiKeys) -> None:
    with pytest.raises(ValueError) as info:
        parse_scopes("runs:write,leads:delete,everything")
    message = str(info.value)
    assert "everything, leads:delete" in message
    assert all(scope.value in message for scope in Scope)
    with pytest.raises(ValueError, match="no scopes given"):
        parse_scopes(" , ")
    assert parse_scopes(" runs:read ,export:read,") == {Scope.RUNS_READ, Scope.EXPORT_READ}
    for name in ("", "   ", "x" * 101):
        with pytest.raises(ValueError, match="name"):
            keys.create(name, ["runs:read"])
    assert keys.list() == []


def test_the_keys_commands_print_a_key_once_and_never_a_secret(
    mongo_url: str, client: MongoClient
) -> None:
    db_name = f"t_keys_cli_{uuid.uuid4().hex[:8]}"
    runner = CliRunner()
    try:
        with leadflow_env(LEADFLOW_MONGODB_URI=mongo_url, LEADFLOW_MONGODB_DB=db_name):
            created = runner.invoke(
                app, ["keys", "create", "--name", "bench", "--scopes", "ratelimit:exempt,admin"]
            )
            assert created.exit_code == 0, created.output
            # The key alone on stdout (for `KEY=$(leadflow keys create ...)`), notes on stderr.
            key = created.stdout.strip()
            match = KEY_PATTERN.fullmatch(key)
            assert match is not None
            key_id, secret = match.groups()
            assert "cannot be shown again" in created.stderr and key not in created.stderr

            store = ApiKeys(client[db_name])
            verified = store.verify(key)
            assert verified is not None and verified.ratelimit_exempt and verified.name == "bench"

            listed = runner.invoke(app, ["keys", "list"])
            assert listed.exit_code == 0, listed.output
            stored = client[db_name]["api_keys"].find_one({"_id": key_id})
            assert stored is not None
            assert key_id in listed.stdout and "bench" in listed.stdout
            for hidden in (secret, stored["hash"], stored["salt"]):
                assert hidden not in listed.output

            bad_scope = runner.invoke(app, ["keys", "create", "--name", "x", "--scopes", "root"])
            assert bad_scope.exit_code == 2 and "runs:write" in bad_scope.output
            pasted = runner.invoke(app, ["keys", "revoke", key])
            assert pasted.exit_code == 2 and secret not in pasted.output

            revoked = runner.invoke(app, ["keys", "revoke", key_id])
            assert revoked.exit_code == 0, revoked.output
            assert "revoked" in revoked.stdout
            assert store.verify(key) is None
            assert runner.invoke(app, ["keys", "revoke", "0" * 12]).exit_code == 1
            store.close()
    finally:
        client.drop_database(db_name)
