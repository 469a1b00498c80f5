/** Element types a tensor can hold (names as in PyTorch). */
export type DType =
  | 'float32'
  | 'float64'
  | 'float16'
  | 'bfloat16'
  | 'int64'
  | 'int32'
  | 'int16'
  | 'int8'
  | 'uint8'
  | 'bool';

/** All dtypes, in a stable order. */
export const DTYPES: readonly DType[] = [
  'float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool',
];

/** Bytes per element. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = {
  float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1,
};

/** c10::ScalarType enum values (stable across libtorch 1.x and 2.x for these types). */
export const SCALAR_TYPE: Readonly<Record<DType, number>> = {
  uint8: 0, int8: 1, int16: 2, int32: 3, int64: 4, float16: 5, float32: 6, float64: 7, bool: 11, bfloat16: 15,
};

const FROM_SCALAR_TYPE = new Map<number, DType>(
  (Object.entries(SCALAR_TYPE) as [DType, number][]).map(([k, v]) => [v, k]),
);

/** Maps a c10::ScalarType value back to a dtype name. */
export function dtypeFromScalarType(code: number): DType {
  const d = FROM_SCALAR_TYPE.get(code);
  if (d === undefined) throw new Error(`unsupported libtorch scalar type code ${code}`);
  return d;
}

/** True for floating-point dtypes. */
export function isFloating(d: DType): boolean {
  return d === 'float32' || d === 'float64' || d === 'float16' || d === 'bfloat16';
}

/** Validates a user-supplied dtype name. */
export function checkDType(d: unknown, where: string): DType {
  if (typeof d === 'string' && (DTYPES as readonly string[]).includes(d)) return d as DType;
  throw new Error(`${where}: unknown dtype ${JSON.stringify(d)}; expected one of ${DTYPES.join(', ')}`);
}
