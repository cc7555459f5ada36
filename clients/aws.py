"""AWS settings and clients shared by the subcommands that reach SQS, S3 or DynamoDB."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator

from aiobotocore.session import get_session


def add_aws_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("AWS")
    group.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                       or "us-east-1", help="AWS region (default: AWS_REGION, else us-east-1)")
    group.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"),
                       help="one URL for SQS, S3 and DynamoDB stand-ins such as moto or LocalStack "
                       "(default: AWS_ENDPOINT_URL)")


@contextlib.asynccontextmanager
async def aws_client(args: argparse.Namespace, service: str, **kwargs) -> AsyncIterator[object]:
    async with get_session().create_client(
        service, region_name=args.region, endpoint_url=args.endpoint_url or None, **kwargs
    ) as client:
        yield client
