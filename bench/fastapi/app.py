# The source design's model server, re-created from its text for the serving benchmark
# (bench/serving.sh). The code is the design's, unchanged, except the last line: host and port
# come from HOST and PORT so the benchmark can bind 127.0.0.1 on a free port.
# Models: model/model_v1.pkl and model/model_v2.pkl relative to the working directory, written
# by train.py.

# app.py - FastAPI model serving application
from fastapi import FastAPI, HTTPException, BackgroundTasks
from pydantic import BaseModel
import joblib
import numpy as np
import pandas as pd
import logging
import time
from typing import List, Dict, Any
import asyncio
from prometheus_client import Counter, Histogram, generate_latest
from starlette.responses import Response

# Configure logging
logging.basicConfig(level=logging.INFO)
logger = logging.getLogger(__name__)

# Prometheus metrics
REQUEST_COUNT = Counter('ml_requests_total', 'Total ML requests', ['method', 'endpoint'])
REQUEST_LATENCY = Histogram('ml_request_duration_seconds', 'ML request latency')
PREDICTION_COUNT = Counter('ml_predictions_total', 'Total predictions made')

app = FastAPI(title="ML Model API", version="1.0.0")

class PredictionRequest(BaseModel):
    features: List[float]
    model_version: str = "v1"

class PredictionResponse(BaseModel):
    prediction: float
    confidence: float
    model_version: str
    timestamp: float

class ModelManager:
    def __init__(self):
        self.models = {}
        self.load_models()
    
    def load_models(self):
        """Load all available model versions"""
        try:
            # Load different model versions
            self.models['v1'] = joblib.load('model/model_v1.pkl')
            self.models['v2'] = joblib.load('model/model_v2.pkl')
            logger.info(f"Loaded models: {list(self.models.keys())}")
        except Exception as e:
            logger.error(f"Error loading models: {e}")
            raise
    
    def predict(self, features: np.ndarray, version: str = "v1") -> Dict[str, Any]:
        """Make prediction with specified model version"""
        if version not in self.models:
            raise ValueError(f"Model version {version} not found")
        
        model = self.models[version]
        
        # Make prediction
        prediction = model.predict(features.reshape(1, -1))[0]
        
        # Calculate confidence (example using prediction probability)
        if hasattr(model, 'predict_proba'):
            proba = model.predict_proba(features.reshape(1, -1))[0]
            confidence = float(np.max(proba))
        else:
            confidence = 0.95  # Default confidence for regression
        
        return {
            'prediction': float(prediction),
            'confidence': confidence,
            'model_version': version
        }

# Initialize model manager
model_manager = ModelManager()

@app.on_event("startup")
async def startup_event():
    logger.info("ML API starting up...")

@app.on_event("shutdown")
async def shutdown_event():
    logger.info("ML API shutting down...")

@app.get("/health")
async def health_check():
    """Health check endpoint"""
    return {"status": "healthy", "timestamp": time.time()}

@app.get("/models")
async def list_models():
    """List available model versions"""
    return {"models": list(model_manager.models.keys())}

@app.post("/predict", response_model=PredictionResponse)
async def predict(request: PredictionRequest, background_tasks: BackgroundTasks):
    """Make prediction"""
    start_time = time.time()
    
    try:
        # Validate input
        if len(request.features) == 0:
            raise HTTPException(status_code=400, detail="Features cannot be empty")
        
        # Convert to numpy array
        features = np.array(request.features)
        
        # Make prediction
        result = model_manager.predict(features, request.model_version)
        
        # Create response
        response = PredictionResponse(
            prediction=result['prediction'],
            confidence=result['confidence'],
            model_version=result['model_version'],
            timestamp=time.time()
        )
        
        # Update metrics
        REQUEST_COUNT.labels(method="POST", endpoint="/predict").inc()
        REQUEST_LATENCY.observe(time.time() - start_time)
        PREDICTION_COUNT.inc()
        
        # Log prediction (background task)
        background_tasks.add_task(log_prediction, request, response)
        
        return response
        
    except Exception as e:
        logger.error(f"Prediction error: {e}")
        raise HTTPException(status_code=500, detail=str(e))

@app.get("/metrics")
async def metrics():
    """Prometheus metrics endpoint"""
    return Response(generate_latest(), media_type="text/plain")

async def log_prediction(request: PredictionRequest, response: PredictionResponse):
    """Log prediction for monitoring and debugging"""
    log_data = {
        'timestamp': response.timestamp,
        'model_version': response.model_version,
        'prediction': response.prediction,
        'confidence': response.confidence,
        'features_hash': hash(tuple(request.features))
    }
    logger.info(f"Prediction logged: {log_data}")

if __name__ == "__main__":
    import os
    import uvicorn
    uvicorn.run(app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000")))
