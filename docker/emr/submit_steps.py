#!/usr/bin/env python3
"""Fill ``${BUCKET}`` in docker/emr/steps.json and submit the steps to an EMR cluster, or write them out.

    python docker/emr/submit_steps.py --bucket my-bucket --cluster-id j-XXXXXXXX   # boto3 AddJobFlowSteps
    python docker/emr/submit_steps.py --bucket my-bucket                           # the filled Steps API JSON
    python docker/emr/submit_steps.py --bucket my-bucket --cli-json steps-cli.json # for `aws emr add-steps`

steps.json is in the EMR Steps API format (``Name``, ``ActionOnFailure``, ``HadoopJarStep``), which boto3's
``add_job_flow_steps`` / ``run_job_flow``, CloudFormation and Step Functions take as is; the AWS CLI's
``add-steps --steps file://…`` wants its own shape (``Type: CUSTOM_JAR``, ``Jar``, ``Args`` at the top), which
``--cli-json`` writes. Needs only the standard library, plus boto3 for ``--cluster-id``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

STEPS = Path(__file__).resolve().parent / "steps.json"
PLACEHOLDER = "${BUCKET}"
# S3 bucket names: 3-63 characters of lowercase letters, digits, dots and hyphens, starting and ending alphanumeric.
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def load_steps(bucket: str, path: Path = STEPS) -> list[dict]:
    """The steps with ``${BUCKET}`` replaced; any other ``${…}`` left is an error."""
    if not BUCKET_NAME.match(bucket):
        raise ValueError(f"not a valid S3 bucket name: {bucket!r}")
    text = path.read_text(encoding="utf-8").replace(PLACEHOLDER, bucket)
    leftover = re.search(r"\$\{[^}]*\}", text)
    if leftover:
        raise ValueError(f"{path}: unfilled placeholder {leftover.group(0)}")
    return json.loads(text)


def cli_steps(steps: list[dict]) -> list[dict]:
    """The same steps in the AWS CLI's ``add-steps`` JSON shape."""
    return [
        {
            "Type": "CUSTOM_JAR",
            "Name": step["Name"],
            "ActionOnFailure": step["ActionOnFailure"],
            "Jar": step["HadoopJarStep"]["Jar"],
            "Args": step["HadoopJarStep"]["Args"],
        }
        for step in steps
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", required=True, help="S3 bucket holding spark-retrieval/ and movielens/ml-1m/")
    parser.add_argument("--cluster-id", help="submit to this cluster (boto3; credentials and region as usual)")
    parser.add_argument("--region", help="AWS region of the cluster (default: boto3's)")
    parser.add_argument("--cli-json", metavar="FILE", help="write the steps in the AWS CLI's add-steps shape")
    parser.add_argument("--steps", type=Path, default=STEPS, help="steps file (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        steps = load_steps(args.bucket, args.steps)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.cli_json:
        Path(args.cli_json).write_text(json.dumps(cli_steps(steps), indent=2) + "\n", encoding="utf-8")
    if args.cluster_id:
        import boto3

        client = boto3.client("emr", region_name=args.region)
        response = client.add_job_flow_steps(JobFlowId=args.cluster_id, Steps=steps)
        for step, step_id in zip(steps, response["StepIds"]):
            print(f"{step_id}  {step['Name']}")
    elif not args.cli_json:
        print(json.dumps(steps, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
