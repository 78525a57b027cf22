from skuflow.cli import app

app()
