/** Worker-thread entry of the segmentation training data loader: serves {@link segSampleFn} samples. */
import { workerData } from 'node:worker_threads';
import { serveSamples } from '../../train/loader.js';
import { type SegSampleContext, segSampleFn } from './train-data.js';

serveSamples(segSampleFn(workerData as SegSampleContext));
