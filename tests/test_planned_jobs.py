"""The tests' reading of `snakemake -n` (conftest.planned_jobs): "nothing planned" must be what Snakemake said."""

import pytest
from conftest import planned_counts

TABLE = """Building DAG of jobs...
Job stats:
job         count
--------  -------
all             1
train           2
total           3

Reasons:
"""


def test_a_job_table_is_read():
    assert planned_counts(TABLE) == {"all": 1, "train": 2}
    until = "Job stats:\njob      count\n-----  -------\ntotal        0\n\nThis was a dry-run (flag -n).\n"
    assert planned_counts(until) == {}


def test_nothing_planned_only_when_snakemake_says_so():
    assert planned_counts("Building DAG of jobs...\nNothing to be done (all requested files are present and up to date).\n") == {}
    # another output format: no "Nothing to be done", no table it can read
    for text in ("Building DAG of jobs...\n", "", TABLE.replace("job         count", "rule        jobs"),
                 TABLE.replace("total           3", "total           4")):
        with pytest.raises(AssertionError, match="output format"):
            planned_counts(text)
