"""Triton: its command line and configuration (launch), and a local deployment driven through its APIs (admin)."""
