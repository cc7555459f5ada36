"""Chorus orchestrator: jobs from SQS, through the synth fleet, to S3."""
