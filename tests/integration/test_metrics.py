"""``GET /metrics`` against a real server: parsed with prometheus-client's parser, the counters
move as sessions are created, attached, detached, resumed, killed, reaped and stormed."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import eventually, inprocess_server
from tests.support.wsclient import connect, must_connect, must_refuse
from tether.server.clock import FakeClock

pytestmark = pytest.mark.timeout(60)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(base_url: str) -> Samples:
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Meter:
    """Scrapes before and after: ``delta`` is how much a sample moved in between."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.before: Samples = {}
        self.now: Samples = {}

    async def start(self) -> Meter:
        self.before = self.now = await scrape(self.base_url)
        return self

    async def read(self) -> Samples:
        self.now = await scrape(self.base_url)
        return self.now

    def delta(self, name: str, **labels: str) -> float:
        return value(self.now, name, **labels) - value(self.before, name, **labels)

    def gauge(self, name: str, **labels: str) -> float:
        return value(self.now, name, **labels)


async def output_position(base_url: str, key: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/stats/sessions") as response:
        stats = await response.json()
    return int(next(s for s in stats["sessions"] if s["key"] == key)["output_position"])


async def test_counters_follow_a_session_from_create_to_kill() -> None:
    async with inprocess_server() as srv:
        meter = await Meter(srv.base_url).start()
        conn = await must_connect(srv.ws_url, project="default", client="metrics-client-01")
        await conn.send("echo METRICS-ONE\r")
        await conn.read_until("METRICS-ONE\r\n")
        await meter.read()
        assert meter.delta("tether_sessions_created_total") == 1
        assert meter.delta("tether_connections_opened_total", kind="create") == 1
        assert meter.delta("tether_connection_attempts_total") == 1
        assert meter.delta("tether_connect_seconds_count") == 1
        assert meter.gauge("tether_sessions", state="attached") == 1
        assert meter.gauge("tether_clients") == 1
        assert meter.delta("tether_input_bytes_total") == len("echo METRICS-ONE\r")
        assert meter.delta("tether_output_bytes_total") >= len(conn.output) > 0
        assert meter.gauge("tether_buffered_bytes") >= len(conn.output)

        position = conn.position
        await conn.close()

        async def detached() -> bool:
            return value(await meter.read(), "tether_sessions", state="detached") == 1

        await eventually(detached)
        assert meter.delta("tether_connections_closed_total", code="1000") == 1
        assert meter.gauge("tether_clients") == 0
        assert meter.gauge("tether_detached_oldest_seconds") >= 0

        again = await must_connect(
            srv.ws_url, project="default", session=conn.hello["session"], offset=position
        )
        assert again.hello["gap"] == 0
        await meter.read()
        assert meter.delta("tether_reconnects_total") == 1
        assert meter.delta("tether_resumes_total", gap="false") == 1
        assert meter.delta("tether_resumes_total", gap="true") == 0
        assert meter.delta("tether_reattach_seconds_count") == 1
        assert meter.delta("tether_connections_opened_total", kind="attach") == 1
        assert meter.gauge("tether_session_reconnects_max") == 1

        async with (
            aiohttp.ClientSession() as http,
            http.delete(f"{srv.base_url}/api/sessions/{again.hello['key']}") as response,
        ):
            assert response.status == 200
        assert await again.wait_closed() == 4013
        await again.close()

        async def ended() -> bool:
            return value(await meter.read(), "tether_connections_closed_total", code="4013") == 1

        await eventually(ended)
        assert meter.delta("tether_sessions_ended_total", reason="kill") == 1
        assert sum(meter.gauge("tether_sessions", state=s) for s in ("attached", "detached")) == 0
        assert meter.gauge("tether_session_reconnects_max") == 0, "ended sessions are forgotten"

        late = await must_refuse(
            srv.ws_url, project="default", session=conn.hello["session"], create=0
        )
        assert late.code == 4013
        await meter.read()
        assert meter.delta("tether_connections_refused_total", code="4013") == 1
        assert meter.delta("tether_connection_attempts_total") == 3


async def test_resume_after_lost_output_counts_a_gap() -> None:
    async with inprocess_server(buffer_size=1024) as srv:
        meter = await Meter(srv.base_url).start()
        conn = await must_connect(srv.ws_url, project="default")
        await conn.send("sleep 0.3; head -c 6000 /dev/zero | tr '\\0' x; echo GAP-DONE\r")
        await conn.read_until("GAP-DONE")  # the echo of the command line
        position = conn.position
        await conn.close()

        async def printed() -> bool:  # 6000 bytes into a 1 KiB ring, detached
            return await output_position(srv.base_url, conn.hello["key"]) >= position + 6000

        await eventually(printed)
        again = await must_connect(
            srv.ws_url, project="default", session=conn.hello["session"], offset=position
        )
        assert again.hello["gap"] > 0
        await meter.read()
        assert meter.delta("tether_resumes_total", gap="true") == 1
        assert meter.delta("tether_resumes_total", gap="false") == 0
        await again.close()


async def test_key_storm_counts_rejections_and_one_breaker_opening() -> None:
    async with inprocess_server(clock=FakeClock(), storm_threshold=3) as srv:
        meter = await Meter(srv.base_url).start()
        first = await must_connect(srv.ws_url, project="default")
        session = first.hello["session"]
        await first.close()
        for _ in range(3):  # the creating attempt had no key yet: these three are counted
            await (await must_connect(srv.ws_url, project="default", session=session)).close()
        for _ in range(3):  # the first trips the breaker, the next two find it open
            refused = await must_refuse(srv.ws_url, project="default", session=session)
            assert refused.code == 4129
        await meter.read()
        assert meter.delta("tether_storm_rejections_total", scope="key") == 3
        assert meter.delta("tether_breaker_opens_total", scope="key") == 1
        assert meter.delta("tether_connections_refused_total", code="4129") == 3
        assert meter.gauge("tether_breakers_open", scope="key") == 1
        assert meter.gauge("tether_breakers_tripped", scope="key") == 1
        assert meter.delta("tether_storm_rejections_total", scope="address") == 0

        srv.clock.advance(1)  # retry-after=1 elapsed: the trial attempt is admitted
        await (await must_connect(srv.ws_url, project="default", session=session)).close()
        await meter.read()
        assert meter.gauge("tether_breakers_open", scope="key") == 0
        assert meter.delta("tether_breaker_opens_total", scope="key") == 1


async def test_address_storm_is_counted_under_its_own_scope() -> None:
    settings = {"storm_exempt_loopback": False, "address_storm_threshold": 2}
    async with inprocess_server(**settings) as srv:
        meter = await Meter(srv.base_url).start()
        for _ in range(2):
            await (await must_connect(srv.ws_url, project="default")).close()
        assert (await must_refuse(srv.ws_url, project="default")).code == 4129
        await meter.read()
        assert meter.delta("tether_storm_rejections_total", scope="address") == 1
        assert meter.delta("tether_breaker_opens_total", scope="address") == 1
        assert meter.gauge("tether_breakers_open", scope="address") == 1


async def test_idle_reap_and_shell_exit_end_sessions_by_reason() -> None:
    async with inprocess_server(clock=FakeClock(), idle_timeout=60) as srv:
        meter = await Meter(srv.base_url).start()
        idle = await must_connect(srv.ws_url, project="default")
        await idle.close()

        async def detached() -> bool:
            return value(await meter.read(), "tether_sessions", state="detached") == 1

        await eventually(detached)
        srv.clock.advance(25)
        await meter.read()
        assert meter.gauge("tether_detached_oldest_seconds") == 25
        srv.clock.advance(35)
        quitting = await must_connect(srv.ws_url, project="default")
        await quitting.send("exit 3\r")
        assert await quitting.wait_closed() == 4012
        await quitting.close()

        async def both_ended() -> bool:
            samples = await meter.read()
            return (
                value(samples, "tether_idle_reaps_total")
                - value(meter.before, "tether_idle_reaps_total")
                == 1
                and value(samples, "tether_sessions_ended_total", reason="exit") == 1
            )

        await eventually(both_ended)
        assert meter.delta("tether_sessions_ended_total", reason="reap") == 1
        assert meter.delta("tether_connections_closed_total", code="4012") == 1
        assert meter.gauge("tether_idle_timeout_seconds") == 60


async def test_project_breaker_opens_after_five_failed_starts(tmp_path) -> None:
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    async with inprocess_server(projects=[f"doomed={doomed}"]) as srv:
        doomed.rmdir()  # every shell start now fails: its directory is gone
        meter = await Meter(srv.base_url).start()
        codes = [(await must_refuse(srv.ws_url, project="doomed")).code for _ in range(6)]
        assert codes == [1011] * 5 + [1013]
        await meter.read()
        assert meter.delta("tether_spawn_failures_total") == 5
        assert meter.delta("tether_breaker_opens_total", scope="project") == 1
        assert meter.gauge("tether_breakers_open", scope="project") == 1
        assert meter.delta("tether_connections_refused_total", code="1011") == 5
        assert meter.delta("tether_connections_refused_total", code="1013") == 1


async def test_labels_stay_bounded_and_process_metrics_exist() -> None:
    async with inprocess_server() as srv:
        conns = [await must_connect(srv.ws_url, project="default") for _ in range(3)]
        odd = await connect(srv.ws_url, project="default")
        assert not isinstance(odd, type(None))
        await odd.ws.close(code=4999)  # a close code the client made up
        await odd.http.close()
        meter = Meter(srv.base_url)

        async def counted() -> bool:
            return value(await meter.read(), "tether_connections_closed_total", code="other") == 1

        await eventually(counted)
        for name, labels in meter.now:
            for label_value in dict(labels).values():
                assert "session_" not in label_value and label_value != "127.0.0.1", (
                    name,
                    label_value,
                )
        assert meter.gauge("process_cpu_seconds_total") > 0
        assert meter.gauge("process_resident_memory_bytes") > 10 * 1024 * 1024
        assert meter.gauge("tether_ready") == 1
        assert meter.gauge("tether_max_sessions") == srv.server.manager.max_sessions  # limits
        assert meter.gauge("tether_sessions_memory_bytes") > 0
        assert [v for (n, _), v in meter.now.items() if n == "tether_build_info"] == [1.0]
        for conn in conns:
            await conn.close()
