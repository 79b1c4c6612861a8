"""Sensors read from mocked sysfs trees (a Pi's PMIC or a Jetson's INA3221 cannot exist here),
and the round meter that uses them."""

from __future__ import annotations

from pathlib import Path

from genofed.agent import costs, sensors


def _put(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text + "\n")


def pi(root: Path) -> Path:
    _put(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal")
    _put(root, "sys/class/thermal/thermal_zone0/temp", "61250")
    return root


def test_temperatures_by_zone(tmp_path: Path) -> None:
    pi(tmp_path)
    _put(tmp_path, "sys/class/thermal/thermal_zone1/type", "cpu-thermal")  # same name twice
    _put(tmp_path, "sys/class/thermal/thermal_zone1/temp", "40000")
    _put(tmp_path, "sys/class/thermal/thermal_zone2/temp", "garbage")
    assert sensors.temperatures(tmp_path) == {"cpu-thermal": 61.25,
                                              "cpu-thermal:thermal_zone1": 40.0}
    assert sensors.temperatures(tmp_path / "none") == {}


def test_vcgencmd_throttled_bits() -> None:
    bits = sensors.vcgencmd_throttled(lambda cmd: "throttled=0x50005\n")
    assert bits == 0x50005
    assert sensors.describe_throttled(bits) == [
        "now: under-voltage", "now: throttled", "since boot: under-voltage",
        "since boot: throttled"]
    assert sensors.vcgencmd_throttled(lambda cmd: "error") is None


def test_rapl_counts_packages_and_wraps(tmp_path: Path) -> None:
    _put(tmp_path, "sys/class/powercap/intel-rapl:0/energy_uj", "1000000")
    _put(tmp_path, "sys/class/powercap/intel-rapl:0/max_energy_range_uj", "262143328850")
    _put(tmp_path, "sys/class/powercap/intel-rapl:0:0/energy_uj", "999")  # a sub-domain
    before = sensors.rapl_energy_uj(tmp_path)
    assert before == (1000000, 262143328850)
    assert sensors.energy_delta_j(before, (3500000, 262143328850)) == 2.5
    assert sensors.energy_delta_j((262143328000, 262143328850),
                                  (150, 262143328850)) == 0.001
    assert sensors.energy_delta_j(None, before) is None


def test_jetson_ina3221_rails_and_a_power_supply(tmp_path: Path) -> None:
    hw = "sys/class/hwmon/hwmon1"
    _put(tmp_path, f"{hw}/name", "ina3221")
    _put(tmp_path, f"{hw}/in1_input", "5000")   # mV
    _put(tmp_path, f"{hw}/curr1_input", "400")  # mA
    _put(tmp_path, "sys/class/hwmon/hwmon0/name", "rpi_pmic")
    _put(tmp_path, "sys/class/hwmon/hwmon0/power1_input", "3100000")  # uW
    _put(tmp_path, "sys/class/power_supply/BAT0/power_now", "7500000")
    assert sensors.power_w(tmp_path) == {"rpi_pmic/power1": 3.1, "ina3221/in1": 2.0,
                                         "power_supply/BAT0": 7.5}


def test_unreadable_says_what_is_missing(tmp_path: Path) -> None:
    missing = costs.unreadable(tmp_path, throttled=lambda: None)
    assert [m.split(" ")[0] for m in missing] == ["temperature", "throttling", "energy"]
    pi(tmp_path)
    _put(tmp_path, "sys/class/powercap/intel-rapl:0/energy_uj", "5")
    assert costs.unreadable(tmp_path, throttled=lambda: 0) == []


def test_round_meter_on_a_pi(tmp_path: Path) -> None:
    pi(tmp_path)
    _put(tmp_path, "sys/class/hwmon/hwmon0/name", "rpi_pmic")
    _put(tmp_path, "sys/class/hwmon/hwmon0/power1_input", "4000000")
    m = costs.RoundMeter(3, root=tmp_path, throttled=lambda: 0x4)
    m.phase("train")
    m.phase("join")
    m.sent(100)
    m.sent(50)
    m.received(70)
    _put(tmp_path, "sys/class/thermal/thermal_zone0/temp", "63750")
    row = m.finish("answered every stage")
    assert (row["bytes_up"], row["messages_up"], row["bytes_down"]) == (150, 2, 70)
    assert set(row["phases_s"]) == {"train", "join", "protocol"}
    assert row["temperature_rise_c"] == {"cpu-thermal": 2.5}
    assert row["throttled"] == ["now: throttled"]
    assert row["energy_source"].startswith("estimate") and row["energy_j"] >= 0
    assert row["peak_rss_mb"] > 0 and row["cpu_s"] >= 0
    costs.record(tmp_path, row)
    assert costs.read_costs(tmp_path) == [row]


def test_peak_rss_is_this_process_not_its_parent() -> None:
    # A child of a process that touched 300 MB: ru_maxrss would say >= 300 MB after exec.
    import subprocess
    import sys

    code = ("b = bytearray(300 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
            "import subprocess, sys\nsys.exit(subprocess.run([sys.executable, '-c', "
            "'from genofed.agent.costs import peak_rss_mb; print(peak_rss_mb())'])"
            ".returncode)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert float(out) < 250, out
