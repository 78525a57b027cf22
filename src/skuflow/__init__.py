"""skuflow: a reference system of Python microservices that talk over HTTP and RabbitMQ."""

__version__ = "0.1.0"
