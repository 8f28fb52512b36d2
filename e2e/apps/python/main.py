# A FastAPI service with no OpenTelemetry code: what `kotel.dev/inject-python` instruments
# without a rebuild (the e2e suite's fixture, run by uvicorn in the python-app image).
from typing import List, Optional

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI()


class Features(BaseModel):
    features: List[float]


@app.get("/hello")
def hello():
    return {"Hello": "World"}


@app.get("/items/{item_id}")
def read_item(item_id: int, q: Optional[str] = None):
    return {"item_id": item_id, "q": q}


@app.post("/predict")
def predict(body: Features):
    # The house-price model of the inference app, in one line: price from square feet.
    if len(body.features) != 1:
        raise HTTPException(status_code=422, detail="features: expected [square_feet]")
    return {"price": 50_000.0 + 150.0 * body.features[0]}
