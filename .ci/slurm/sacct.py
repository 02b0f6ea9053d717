#!/usr/bin/env python3
"""A small stand-in for SLURM's ``sacct`` on the private test cluster of .ci/slurm (no slurmdbd).

start.sh installs it as DIR/bin/sacct (first line replaced by the system python3) and env.sh puts
DIR/bin first on PATH. It answers what pydra's SLURM worker asks,
``sacct -n -X -j ID -o JobID,State,ExitCode``, and the common variants: any column order and
``%width`` suffixes, ``-n``, ``-X``, ``-p``/``-P``/``--delimiter``, ``-b``, ``-s STATES``, several
job ids, no ``-j`` (all jobs). Flags it does not know are accepted and ignored.

Sources, best first: ``scontrol -o show job`` (live jobs, and finished ones for MinJobAge=600 s),
then the jobcomp/filetxt file named by JobCompLoc in slurm.conf (every finished job since start.sh
last started the cluster; the last record wins). Only allocation lines are printed (as with -X):
there is no per-step accounting without slurmdbd.
"""
import os
import re
import subprocess
import sys
from datetime import datetime

# Options of the real sacct that take a value (short and long form), so their values are skipped.
VALUE_SHORT = set("AxMCEfFogjiINrqRSskKuW")
VALUE_LONG = {
    "accounts", "associations", "clusters", "constraints", "endtime", "file", "flags", "format",
    "gid", "group", "jobs", "nnodes", "ncpus", "nodelist", "partition", "qos", "reason",
    "starttime", "state", "timelimit-max", "timelimit-min", "uid", "user", "wckeys", "delimiter",
    "name", "units", "array",
}
DEFAULT_FORMAT = "JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode"
BRIEF_FORMAT = "JobID,State,ExitCode"
WIDTHS = {"jobid": 12, "jobidraw": 12, "exitcode": 8, "derivedexitcode": 8, "nodelist": 15,
          "submit": 19, "start": 19, "end": 19, "eligible": 19, "workdir": 30, "user": 9,
          "alloctres": 30, "reqtres": 30}
LEFT = {"jobid", "jobidraw"}  # sacct left-aligns job ids, right-aligns everything else
STATE_ABBREV = {"PD": "PENDING", "R": "RUNNING", "CD": "COMPLETED", "CA": "CANCELLED",
                "F": "FAILED", "TO": "TIMEOUT", "NF": "NODE_FAIL", "PR": "PREEMPTED",
                "OOM": "OUT_OF_MEMORY", "S": "SUSPENDED", "BF": "BOOT_FAIL", "DL": "DEADLINE",
                "RQ": "REQUEUED", "RS": "RESIZING", "RV": "REVOKED"}


def parse_args(argv):
    opts = {"jobs": None, "format": DEFAULT_FORMAT, "header": True, "parsable": None,
            "delimiter": "|", "states": None}
    i = 0

    def take(name, inline):
        nonlocal i
        if inline is not None:
            return inline
        i += 1
        return argv[i] if i < len(argv) else ""

    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            name, _, val = a[2:].partition("=")
            val = val if "=" in a else None
            if name == "jobs":
                opts["jobs"] = take(name, val)
            elif name == "format":
                opts["format"] = take(name, val)
            elif name == "noheader":
                opts["header"] = False
            elif name == "parsable":
                opts["parsable"] = "trailing"
            elif name == "parsable2":
                opts["parsable"] = "plain"
            elif name == "delimiter":
                opts["delimiter"] = take(name, val)
            elif name == "brief":
                opts["format"] = BRIEF_FORMAT
            elif name == "state":
                opts["states"] = take(name, val)
            elif name in VALUE_LONG and val is None:
                i += 1
        elif a.startswith("-") and len(a) > 1:
            k = 1
            while k < len(a):
                c = a[k]
                rest = a[k + 1:] or None
                if c in VALUE_SHORT:
                    v = take(c, rest)
                    if c == "j":
                        opts["jobs"] = v
                    elif c == "o":
                        opts["format"] = v
                    elif c == "s":
                        opts["states"] = v
                    break
                if c == "n":
                    opts["header"] = False
                elif c == "p":
                    opts["parsable"] = "trailing"
                elif c == "P":
                    opts["parsable"] = "plain"
                elif c == "b":
                    opts["format"] = BRIEF_FORMAT
                elif c == "V":
                    print("slurm 22.05.8 (rdmm sacct shim)")
                    sys.exit(0)
                k += 1
        i += 1
    return opts


def kv_record(line):
    """'Key=value Key2=value with spaces ...' -> dict (values may contain spaces)."""
    rec = {}
    for m in re.finditer(r"(?:^|\s)([A-Za-z][\w/:]*)=(.*?)(?=\s+[A-Za-z][\w/:]*=|\s*$)", line):
        rec[m.group(1)] = m.group(2)
    return rec


def slurm_conf_path():
    conf = os.environ.get("SLURM_CONF")
    if conf:
        return conf
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "slurm.conf")


def jobcomp_path(conf):
    try:
        with open(conf) as f:
            for line in f:
                m = re.match(r"\s*JobCompLoc\s*=\s*(\S+)", line, re.I)
                if m:
                    return m.group(1)
    except OSError:
        pass
    return None


def scontrol_jobs(conf):
    env = dict(os.environ, SLURM_CONF=conf)
    try:
        out = subprocess.run(["scontrol", "-o", "show", "job"], env=env, capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    jobs = {}
    for line in out.splitlines():
        rec = kv_record(line)
        if "JobId" in rec:
            rec["_source"] = "scontrol"
            jobs[rec["JobId"]] = rec
    return jobs


def jobcomp_jobs(path):
    jobs = {}
    if not path:
        return jobs
    try:
        with open(path, errors="replace") as f:
            for line in f:
                rec = kv_record(line.strip())
                if "JobId" in rec:
                    rec["_source"] = "jobcomp"
                    jobs[rec["JobId"]] = rec  # the last record for an id wins
    except OSError:
        pass
    return jobs


def clean(v):
    return "" if v in (None, "(null)", "None", "N/A", "Unknown") else v


def elapsed(rec):
    if rec.get("RunTime"):
        return rec["RunTime"]
    try:
        s = datetime.fromisoformat(rec["StartTime"])
        e = datetime.fromisoformat(rec["EndTime"])
    except (KeyError, ValueError):
        return ""
    secs = max(0, int((e - s).total_seconds()))
    d, secs = divmod(secs, 86400)
    txt = "%02d:%02d:%02d" % (secs // 3600, secs % 3600 // 60, secs % 60)
    return f"{d}-{txt}" if d else txt


def state_of(rec):
    st = rec.get("JobState", "")
    # scontrol shows COMPLETING/CONFIGURING while the node cleans up or boots: not final yet.
    if st in ("COMPLETING", "CONFIGURING"):
        return "RUNNING"
    if st == "CANCELLED":
        return "CANCELLED by %s" % re.sub(r"^.*\((\d+)\)$", r"\1", rec.get("UserId", "0"))
    return st


def field(rec, name):
    n = name.lower()
    user = re.sub(r"\(.*\)$", "", rec.get("UserId", ""))
    group = re.sub(r"\(.*\)$", "", rec.get("GroupId", ""))
    table = {
        "jobid": rec.get("JobId", ""), "jobidraw": rec.get("JobId", ""),
        "jobname": rec.get("JobName", rec.get("Name", "")), "state": state_of(rec),
        "exitcode": rec.get("ExitCode", ""), "derivedexitcode": rec.get("DerivedExitCode", ""),
        "partition": rec.get("Partition", ""), "account": rec.get("Account", ""),
        "alloccpus": rec.get("NumCPUs", rec.get("ProcCnt", "")),
        "ncpus": rec.get("NumCPUs", rec.get("ProcCnt", "")),
        "nnodes": rec.get("NumNodes", rec.get("NodeCnt", "")),
        "nodelist": rec.get("NodeList", ""), "user": user, "group": group,
        "uid": re.sub(r"^.*\((\d+)\)$", r"\1", rec.get("UserId", "")),
        "gid": re.sub(r"^.*\((\d+)\)$", r"\1", rec.get("GroupId", "")),
        "submit": rec.get("SubmitTime", ""), "eligible": rec.get("EligibleTime", ""),
        "start": rec.get("StartTime", ""), "end": rec.get("EndTime", ""),
        "elapsed": elapsed(rec), "timelimit": rec.get("TimeLimit", ""),
        "workdir": rec.get("WorkDir", ""), "qos": rec.get("QOS", ""),
        "alloctres": rec.get("TRES", rec.get("Tres", "")),
        "reqtres": rec.get("TRES", rec.get("Tres", "")),
        "reason": rec.get("Reason", ""), "cluster": rec.get("Cluster", "rdmm"),
    }
    return clean(table.get(n, ""))


def main(argv):
    opts = parse_args(argv)
    conf = slurm_conf_path()
    jobs = jobcomp_jobs(jobcomp_path(conf))
    jobs.update(scontrol_jobs(conf))  # live controller state wins over old completion records

    if opts["jobs"]:
        wanted = [j.split(".")[0] for j in re.split(r"[,\s]+", opts["jobs"]) if j]
        recs = [jobs[j] for j in dict.fromkeys(wanted) if j in jobs]
    else:
        recs = sorted(jobs.values(), key=lambda r: int(r["JobId"]) if r["JobId"].isdigit() else 0)
    if opts["states"]:
        keep = {STATE_ABBREV.get(s.upper(), s.upper()) for s in opts["states"].split(",") if s}
        recs = [r for r in recs if state_of(r).split()[0] in keep]

    cols = []
    for spec in opts["format"].split(","):
        spec = spec.strip()
        if not spec:
            continue
        name, _, width = spec.partition("%")
        w = int(width) if re.fullmatch(r"-?\d+", width) else WIDTHS.get(name.lower(), 10)
        left = name.lower() in LEFT or w < 0
        cols.append((name, abs(w), left))

    out = []
    if opts["parsable"]:
        d = opts["delimiter"]
        end = d if opts["parsable"] == "trailing" else ""
        if opts["header"]:
            out.append(d.join(n for n, _, _ in cols) + end)
        for r in recs:
            out.append(d.join(field(r, n) for n, _, _ in cols) + end)
    else:
        def fmt(v, w, left):
            if len(v) > w:
                v = v[: w - 1] + "+"
            return v.ljust(w) if left else v.rjust(w)

        if opts["header"]:
            out.append(" ".join(fmt(n, w, left) for n, w, left in cols) + " ")
            out.append(" ".join("-" * w for _, w, _ in cols) + " ")
        for r in recs:
            out.append(" ".join(fmt(field(r, n), w, left) for n, w, left in cols) + " ")
    if out:
        print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
