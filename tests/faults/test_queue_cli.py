"""The visible queue through the real CLI: places in line, "start after job N", cancel while queued,
and a clear error for a predecessor that does not exist."""
from tests.cli import Cli


def test_queue_positions_start_after_and_cancel_through_the_cli(embedded_studio):
    s = embedded_studio
    cli = Cli(s.env)
    first, second = s.submit(), s.submit()
    train = ("train", "--model", "tiny", "--dataset", str(s.dataset_id), "--set", "max_steps=4")
    third = cli.json(*train, "--after", str(first))["id"]

    jobs = {j["id"]: j for j in cli.json("jobs", "list")["jobs"]}
    assert [jobs[i]["position"] for i in (first, second, third)] == [1, 2, 3]
    assert jobs[third]["after"] == first and jobs[first]["after"] is None
    assert f"job {third} [train] queued step 0/0 attempt 0 (position 3 in the queue, after job {first})" in \
        cli.run("jobs", "list").stdout

    assert cli.json("jobs", "cancel", str(first))["state"] == "cancelled"
    jobs = {j["id"]: j for j in cli.json("jobs", "list")["jobs"]}
    assert (jobs[first]["position"], jobs[second]["position"], jobs[third]["position"]) == (None, 1, 2)

    bad = cli.run(*train, "--after", "999", ok=False)
    assert bad.returncode == 2 and "job 999 does not exist" in bad.stderr and "Traceback" not in bad.stderr
