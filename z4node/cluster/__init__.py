"""Cluster membership: SWIM gossip, the consistent-hash ring, the Kademlia
DHT and packet authentication. Knows nothing of S3.
"""
